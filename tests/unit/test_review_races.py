"""Races found by review of the lifecycle merge (urgent kill, lease ids), with the real
Daemon and Executor over fakes that behave as an unkind engine and etcd would."""

from __future__ import annotations

import threading
import time

import structlog

from havip import config
from havip.daemon.loop import Adapters, Daemon
from havip.model import Advert, LeaseLost, State
from havip.protocol import codec
from tests.fakes import FakeAnnouncer, FakeClock, FakeLink, FakeRuntime, FakeSocket, FakeVips
from tests.unit.test_daemon import BASE, _settle

GRACE = 60.0


class RacyEngine(FakeRuntime):
    """An engine where `docker start` can be held in flight (block_start), and a graceful
    `docker stop` of a running container lasts until the container ends (a kill) or the
    grace runs out, as a Milvus that drains slowly. A kill of a container that is not
    running (yet) does nothing: it cannot kill what a start in flight will run."""

    def __post_init__(self):
        super().__post_init__()
        self.block_start = threading.Event()      # set: start() waits for release_start
        self.release_start = threading.Event()
        self.start_began = threading.Event()
        self.graceful_began = threading.Event()
        self._ended = threading.Condition()

    def start(self) -> None:
        self.calls.append("start")
        if self.block_start.is_set():
            self.start_began.set()
            self.release_start.wait(GRACE)
        with self._ended:
            self.running = True

    def stop(self, timeout: float | None = None) -> bool:
        self.calls.append("stop" if timeout is None else f"stop(timeout={timeout})")
        with self._ended:
            if not self.running:
                return False
            if timeout == 0:
                self.running = False
                self._ended.notify_all()
                return True
            self.graceful_began.set()
            self._ended.wait_for(lambda: not self.running, GRACE)
            self.running = False
            return True


def _until(d: Daemon, cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        d.run_once()
        if cond():
            return True
        time.sleep(0.01)
    return False


def _daemon(rt):
    cfg = config.parse({**BASE, "milvus": {"container": "milvus", "start_timeout": 5, "stop_timeout": GRACE}},
                       default_instance="test")
    sock, vips, link, clock = FakeSocket(), FakeVips(), FakeLink(), FakeClock()
    ad = Adapters(make_socket=lambda: sock, vips=vips, announcer=FakeAnnouncer(), link=link, runtime=rt,
                  milvus_probe=object())
    return Daemon(cfg, ad, log=structlog.get_logger("test"), clock=clock), sock, clock


def test_a_fence_over_a_graceful_stop_kills_a_milvus_whose_start_was_in_flight():
    """Master starting Milvus (docker start in flight); a higher master appears: graceful
    stop queued behind the start; the etcd lease is lost: the kill runs out of order at
    once, but finds nothing running yet. The start then completes. Milvus must still die
    at once (the fence: the lease may move within fence_margin), not after the graceful
    stop's whole grace."""
    rt = RacyEngine(running=False)
    d, sock, clock = _daemon(rt)
    try:
        d.start()
        _settle(d)
        clock.advance(3.7)
        d.run_once()                                  # master, gate shut for the settle window
        assert d.machine.state == State.MASTER
        rt.block_start.set()
        clock.advance(1.0)
        assert _until(d, rt.start_began.is_set, 5), "the start never began"
        assert str(d.machine.container) == "starting"
        higher = codec.encode(Advert(2, 51, 200, 1.0, ("198.18.0.50",), auth_type=1, password=b"1111"),
                              src="198.18.0.21", dst="224.0.0.18")
        sock.deliver(higher, "198.18.0.21")          # step down: graceful stop, queued behind the start
        assert _until(d, lambda: d.machine.leaving == State.BACKUP, 5)
        d.post(LeaseLost("cannot prove the etcd lease of /service/havip/51/leader"))
        assert _until(d, lambda: d.executor.counters["urgent_kills"] == 1, 5), "no out-of-order kill"
        rt.release_start.set()                        # docker start completes after the kill
        assert _until(d, lambda: rt.graceful_began.is_set() or rt.calls.count("stop(timeout=0)") >= 2, 5)
        # Milvus, started after the urgent kill, must be dead within the fence's margin.
        assert _until(d, lambda: not rt.running, 3), \
            f"milvus still runs through the graceful stop after the fence: calls {rt.calls}"
        assert _until(d, lambda: d.machine.state == State.FAULT, 5)
    finally:
        rt.release_start.set()
        with rt._ended:
            rt.running = False
            rt._ended.notify_all()
        d.close()
