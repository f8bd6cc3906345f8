"""Review of the container watch and the runner's kick (cd8e59a): the watch against an
engine that speaks real HTTP on a unix socket (tests/unit/fake_engine.py) but sends
what a broken engine or proxy could: a line that is not JSON, bytes without a line
end, events of other containers (the engine's `container=` filter matches name
prefixes), events the filter should have kept out; and the runner under a flood of
kicks."""

from __future__ import annotations

import json
import threading
import time

import structlog

from havip.checks.probes import CheckResult
from havip.checks.runner import KICKS_PER_INTERVAL, CheckRunner
from havip.checks.watch import MAX_LINE, ContainerWatch
from tests.unit.fake_engine import FakeEngine


def _event(action: str, name: str = "milvus", cid: str = "4f1e" + "0" * 60) -> bytes:
    return json.dumps({"status": action, "id": cid, "from": "milvus:latest", "Type": "container",
                       "Action": action, "Actor": {"ID": cid, "Attributes": {"name": name, "exitCode": "137"}},
                       "scope": "local", "time": 1, "timeNano": 1}).encode() + b"\n"


def _watch(engine: FakeEngine, container: str = "milvus"):
    kicks: list[str] = []
    kicked = threading.Event()
    w = ContainerWatch(engine.url, container, 2.0, retry=0.01)
    w.start(lambda why: (kicks.append(why), kicked.set()))
    return w, kicks, kicked


def _until(pred, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_a_line_that_is_not_json_is_counted_and_the_events_after_it_still_kick(tmp_path):
    # docker-py's decoder (decode=True) never got past such a line: the watch stayed
    # "connected" and deaf until the stream broke.
    engine = FakeEngine(str(tmp_path / "e.sock"), lambda n: [b"<html>proxy says hello</html>\n", b"[1, 2]\n",
                                                              _event("die"), "hold"])
    w, kicks, kicked = _watch(engine)
    try:
        with structlog.testing.capture_logs() as logs:
            assert kicked.wait(10), "the die after a line that is not JSON never kicked"
    finally:
        w.stop()
        engine.close()
    assert kicks == ["container milvus: Docker event die"]
    assert w.rejected == 2 and w.losses == 0
    said = [e for e in logs if e["event"] == "container_watch_rejected"]
    assert len(said) == 1 and said[0]["count"] == 1     # said once a minute, counted


def test_hostile_lines_are_counted_and_never_end_the_stream(tmp_path):
    hostile = [b"[" * 100_000 + b"\n",                      # nested past the recursion limit
               b"\xff\xfe not utf-8\n", b"1" * 5000 + b"\n",  # ints past the digit limit
               b'{"Action": ["die"], "Actor": "milvus"}\n',    # wrong types everywhere
               b'{"Action": "die", "Actor": {"ID": {"x": 1}, "Attributes": ["milvus"]}}\n',
               b'{"Action": "die", "Actor": {"ID": "4f1e", "Attributes": {"name": ["milvus"]}}}\n',
               b"\n\r\n   \n"]                                 # blank lines are nothing
    engine = FakeEngine(str(tmp_path / "e.sock"), lambda n: [*hostile, _event("die"), "hold"])
    w, kicks, kicked = _watch(engine)
    try:
        assert kicked.wait(10)
    finally:
        w.stop()
        engine.close()
    assert kicks == ["container milvus: Docker event die"]
    assert (w.rejected, w.foreign, w.losses) == (3, 3, 0)


def test_bytes_without_a_line_end_drop_the_stream_before_they_fill_memory(tmp_path):
    # docker-py's decoder buffered all of it (16 MiB here, unbounded in general) waiting
    # for a JSON document to end.
    junk = [b"x" * 65536] * 256

    def plan(n):
        return [*junk, "hold"] if n == 0 else [_event("die"), "hold"]
    engine = FakeEngine(str(tmp_path / "e.sock"), plan)
    w, kicks, kicked = _watch(engine)
    try:
        with structlog.testing.capture_logs() as logs:
            assert kicked.wait(20), "the watch never gave up on a stream without line ends"
    finally:
        w.stop()
        engine.close()
    assert w.losses == 1 and engine.events_requests == 2
    lost = [e for e in logs if e["event"] == "container_watch_lost"]
    assert len(lost) == 1 and f"more than {MAX_LINE} bytes without a line end" in lost[0]["reason"]


def test_an_event_of_a_container_whose_name_only_begins_with_ours_is_not_a_kick(tmp_path):
    # dockerd matches `container=milvus` as a prefix of names and IDs: milvus-etcd and
    # milvus-minio of the Milvus compose file are "milvus" to its filter (real dockerd:
    # tests/integration/test_docker_milvus.py).
    engine = FakeEngine(str(tmp_path / "e.sock"), lambda n: [
        _event("die", "milvus-etcd", "9a" + "0" * 62), _event("oom", "milvus-minio", "9b" + "0" * 62),
        _event("die"), "hold"])
    w, kicks, kicked = _watch(engine)
    try:
        assert kicked.wait(10)
        assert _until(lambda: w.events == 1 and w.foreign == 2)
    finally:
        w.stop()
        engine.close()
    assert kicks == ["container milvus: Docker event die"]


def test_a_container_named_by_its_id_is_matched_by_its_id(tmp_path):
    cid = "4f1e" + "0" * 60
    engine = FakeEngine(str(tmp_path / "e.sock"), lambda n: [_event("die", "milvus", cid), "hold"])
    w, kicks, kicked = _watch(engine, container=cid[:12])
    try:
        assert kicked.wait(10)
    finally:
        w.stop()
        engine.close()
    assert kicks == [f"container {cid[:12]}: Docker event die"]


def test_events_the_engine_filter_should_have_kept_out_are_not_kicks(tmp_path):
    # An engine or proxy that ignores the filters sends every event of every container:
    # a healthcheck's exec every few seconds must not run the checks.
    engine = FakeEngine(str(tmp_path / "e.sock"), lambda n: [
        _event("exec_die"), _event("start"), _event("health_status: healthy"), _event("oom"), "hold"])
    w, kicks, kicked = _watch(engine)
    try:
        assert kicked.wait(10)
        assert _until(lambda: w.foreign == 3)
    finally:
        w.stop()
        engine.close()
    assert kicks == ["container milvus: Docker event oom"]


def test_a_stream_that_ends_is_followed_again_without_leaking_sockets(tmp_path):
    import os

    engine = FakeEngine(str(tmp_path / "e.sock"), lambda n: [_event("die"), "close"])
    before = len(os.listdir("/proc/self/fd"))
    w, kicks, _ = _watch(engine)
    try:
        assert _until(lambda: engine.events_requests >= 50)
    finally:
        w.stop()
        engine.close()
    assert not w._thread.is_alive()
    assert _until(lambda: len(os.listdir("/proc/self/fd")) <= before + 2)
    assert len(kicks) >= 49 and w.losses >= 49


def test_stop_returns_when_the_engine_never_answers_the_events_request(tmp_path):
    # docker-py sends GET /events without a timeout and its socket is out of reach until
    # the answer's headers come: stop() cannot end that read. It returns after its own
    # timeout, and the (daemon) thread goes with the process: the known limit.
    engine = FakeEngine(str(tmp_path / "e.sock"), lambda n: "noheaders")
    w, _, _ = _watch(engine)
    try:
        assert _until(lambda: engine.events_requests == 1)
        t0 = time.monotonic()
        w.stop(timeout=0.5)
        assert time.monotonic() - t0 < 2.0
    finally:
        engine.close()
    assert _until(lambda: not w._thread.is_alive())    # the engine gone, the read ends
    assert w.losses == 0 and not w.connected


# ---------------------------------------------------------------- the runner under a flood


class FloodTrigger:
    """Kicks as fast as a thread can: an engine that sends die events in a loop."""

    def __init__(self):
        self.done = threading.Event()
        self.kicks = 0

    def start(self, kick):
        def run():
            while not self.done.is_set():
                kick("container milvus: Docker event die")
                self.kicks += 1
                time.sleep(0.0002)
        threading.Thread(target=run, daemon=True).start()

    def stop(self):
        self.done.set()


def test_a_flood_of_kicks_does_not_run_the_checks_in_a_busy_loop():
    # Each master round writes the lease (an fsync) and opens a gRPC connection: before,
    # 1,500 rounds a second under a flood, every one of them a thread or three.
    rounds = [0]

    def check():
        rounds[0] += 1
        return CheckResult("container", True, "fine", 0.0, time.monotonic())
    flood = FloodTrigger()
    runner = CheckRunner(lambda role: [check], interval=1.0, rise=1, fall=2, on_change=lambda *a, **k: None,
                         role="master", triggers=(flood,))
    with structlog.testing.capture_logs() as logs:
        runner.start()
        time.sleep(1.5)
        runner.stop()
    assert flood.kicks > 100
    # the first round, one or two on schedule, and KICKS_PER_INTERVAL kicked per interval
    assert rounds[0] <= 3 + 2 * KICKS_PER_INTERVAL, rounds[0]
    assert runner.kicks_refused > 0
    said = [e for e in logs if e["event"] == "check_kicks_refused"]
    assert len(said) == 1


def test_a_kick_after_a_quiet_spell_still_runs_at_once():
    done = threading.Semaphore(0)

    def check():
        done.release()
        return CheckResult("container", True, "fine", 0.0, time.monotonic())
    runner = CheckRunner(lambda role: [check], interval=3600.0, rise=1, fall=2, on_change=lambda *a, **k: None,
                         role="master")
    runner.start()
    try:
        assert done.acquire(timeout=10)
        for _ in range(KICKS_PER_INTERVAL):       # the budget is for floods, not for a die and an oom
            runner.kick("die")
            assert done.acquire(timeout=10)
        runner.kick("die")                        # the budget of this (hour-long) interval is spent
        assert not done.acquire(timeout=0.3)
    finally:
        runner.stop()
