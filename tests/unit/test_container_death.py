"""A container that has exited is reported on the master without waiting for `fall`,
and the engine's `die` event runs the round at once (issue 11: the container-kill
takeover). The watch is evidence to look sooner, never a verdict of its own."""

from __future__ import annotations

import json
import threading

import pytest
import structlog

from havip.checks.probes import CheckResult, describe_state, exited
from havip.checks.runner import CheckRunner, Hysteresis
from havip.checks.watch import ContainerWatch


def _info(running: bool, status: str, code: int = 0) -> dict:
    return {"State": {"Running": running, "Status": status, "ExitCode": code}}


@pytest.mark.parametrize("info, final", [
    (_info(False, "exited", 137), True),
    (_info(False, "dead"), True),
    (_info(False, "restarting"), False),       # a restart policy is bringing it back
    (_info(False, "created"), False),          # never started: not a death
    (_info(True, "running"), False),
    ({}, False),
])
def test_exited_is_only_a_process_that_ended(info, final):
    assert exited(info) is final


class Probe:
    def __init__(self, name: str):
        self.name, self.ok, self.final, self.calls = name, True, False, 0
        self.timeout = 1.0

    def check(self) -> CheckResult:
        self.calls += 1
        return CheckResult(self.name, self.ok, "container milvus is not running (exited, exit code 137)"
                           if not self.ok else "fine", 0.0, 0.0, final=self.final and not self.ok)


def _runner(probes: dict, role: str, fall: int = 3):
    changes: list[tuple[bool, str]] = []
    r = CheckRunner(lambda role_: [p.check for p in probes.get(role_, [])], interval=60.0, rise=1, fall=fall,
                    on_change=lambda healthy, reason, **kw: changes.append((healthy, reason)),
                    clock=lambda: 0.0, role=role)
    return r, changes


def test_an_exited_container_on_the_master_is_reported_after_one_round():
    ctr = Probe("container")
    runner, changes = _runner({"master": [ctr]}, "master", fall=3)
    assert runner.run_once() is True
    ctr.ok, ctr.final = False, True
    with structlog.testing.capture_logs() as logs:
        assert runner.run_once() is False         # not after 3 rounds: it will not come back by itself
    said = [e for e in logs if e["event"] == "health changed"]
    assert said and said[0]["final"] is True and "not waiting for 3 times in a row" in said[0]["note"]
    assert changes[-1] == (False, "container check failed 1 time: "
                                  "container milvus is not running (exited, exit code 137)")
    assert runner.run_once() is None              # reported once
    ctr.ok = True
    assert runner.run_once() is True              # and it rises as before


def test_a_failure_that_may_pass_still_waits_for_fall():
    ctr = Probe("container")
    runner, changes = _runner({"master": [ctr]}, "master", fall=3)
    runner.run_once()
    ctr.ok = False                                 # not final: e.g. the engine did not answer
    assert [runner.run_once() for _ in range(3)] == [None, None, False]


def test_on_a_backup_a_final_failure_goes_through_the_hysteresis():
    # The backup's checks ask whether it could serve; its container is stopped by design.
    standby = Probe("standby")
    runner, _ = _runner({"backup": [standby]}, "backup", fall=2)
    runner.run_once()
    standby.ok, standby.final = False, True
    assert [runner.run_once() for _ in range(2)] == [None, False]


def test_settle_unhealthy_counts_like_fall_failures():
    h = Hysteresis(2, 3)
    h.feed(True), h.feed(True)
    assert h.settle_unhealthy() is False and h.state is False and h.fails == 3
    assert h.settle_unhealthy() is None
    assert h.feed(True) is None and h.feed(True) is True


def test_describe_state_still_names_the_exit():
    ok, reason = describe_state("milvus", _info(False, "exited", 137))
    assert not ok and reason == "container milvus is not running (exited, exit code 137)"


# ---------------------------------------------------------------- kick and triggers


class Trigger:
    def __init__(self):
        self.kick = None
        self.stopped = False

    def start(self, kick):
        self.kick = kick

    def stop(self):
        self.stopped = True


def test_a_trigger_kick_runs_a_round_now_not_at_the_next_interval():
    ctr = Probe("container")
    trig = Trigger()
    rounds = threading.Semaphore(0)

    def check():
        r = ctr.check()
        rounds.release()
        return r
    runner = CheckRunner(lambda role: [check], interval=3600.0, rise=1, fall=2,
                         on_change=lambda *a, **k: None, role="master", triggers=(trig,))
    runner.start()
    try:
        assert rounds.acquire(timeout=10)          # the first round, at start
        assert trig.kick is not None
        assert not rounds.acquire(timeout=0.2)     # the next one is an hour away
        trig.kick("container milvus: Docker event die")
        assert rounds.acquire(timeout=10)          # ... unless kicked
    finally:
        runner.stop()
    assert trig.stopped


# ---------------------------------------------------------------- the watch


class Stream:
    """docker-py's CancellableStream of raw chunks (decode=False): iterable, close() ends
    it; may raise mid-way. Events are sent one JSON document a line, as dockerd does."""

    def __init__(self, events, then=None):
        self.events, self.then = list(events), then
        self.closed = threading.Event()

    def __iter__(self):
        for e in self.events:
            yield json.dumps(e).encode() + b"\n" if isinstance(e, dict) else e.encode() + b"\n"
        if self.then is not None:
            raise self.then
        self.closed.wait(30)                       # a live stream blocks until closed

    def close(self):
        self.closed.set()


class Api:
    def __init__(self, stream):
        self.stream, self.filters, self.closed = stream, None, False

    def events(self, filters, decode):
        assert decode is False
        self.filters = filters
        return self.stream

    def close(self):
        self.closed = True


def test_the_watch_kicks_per_event_of_its_container_and_stops_cleanly():
    stream = Stream([{"Action": "die", "Actor": {"ID": "x", "Attributes": {"name": "milvus"}}}, "not a dict",
                     {"status": "oom"}])
    api = Api(stream)
    kicks: list[str] = []
    got = threading.Event()

    def kick(why):
        kicks.append(why)
        if len(kicks) == 2:
            got.set()
    w = ContainerWatch("unix:///nowhere", "milvus", 1.0, client=lambda: api)
    w.start(kick)
    assert got.wait(10)
    w.stop()
    assert kicks == ["container milvus: Docker event die", "container milvus: Docker event oom"]
    assert api.filters == {"type": "container", "container": "milvus", "event": ["die", "oom"]}
    assert stream.closed.is_set() and api.closed and not w._thread.is_alive()


def test_a_broken_stream_is_said_once_and_followed_again():
    apis = [Api(Stream([], then=ConnectionError("reset by peer"))) for _ in range(3)]
    apis.append(Api(Stream([{"Action": "die"}])))
    kicked = threading.Event()
    w = ContainerWatch("unix:///run/x.sock", "milvus", 1.0, retry=0.01, client=lambda: apis.pop(0))
    with structlog.testing.capture_logs() as logs:
        w.start(lambda why: kicked.set())
        assert kicked.wait(10)
        w.stop()
    lost = [e for e in logs if e["event"] == "container_watch_lost"]
    assert len(lost) == 1 and "reset by peer" in lost[0]["reason"]
    assert [e.get("again") for e in logs if e["event"] == "container_watch"] == [None, True]
    assert w.losses == 3


def test_an_engine_that_cannot_be_reached_never_raises_out_of_the_watch():
    def client():
        raise FileNotFoundError(2, "No such file or directory")
    w = ContainerWatch("unix:///run/none.sock", "milvus", 1.0, retry=0.01, client=client)
    w.start(lambda why: None)
    threading.Event().wait(0.1)
    assert w._thread.is_alive() and not w.connected
    w.stop()
    assert not w._thread.is_alive()
