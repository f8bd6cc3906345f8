"""A fence while a graceful stop holds the container worker: the kill runs at once, out of
order (Executor._urgent_kill), and the machine still gets exactly one confirmed stop, from
the ordered worker. The real Daemon and Executor over a fake engine whose graceful stop
takes its whole grace unless the container is killed."""

from __future__ import annotations

import threading

import structlog

from havip import config
from havip.daemon.loop import Adapters, Daemon
from havip.model import Advert, LeaseLost, State
from havip.protocol import codec
from tests.fakes import FakeAnnouncer, FakeClock, FakeLink, FakeRuntime, FakeSocket, FakeVips
from tests.unit.test_daemon import BASE, _become_master, _priorities, run_until as _until

GRACE = 60.0          # the fake's graceful stop lasts this long unless the container is killed


class SlowStopRuntime(FakeRuntime):
    """`docker stop` with grace on a Milvus that drains slowly: it returns when the grace
    ran out or when a kill (timeout=0) ended the container, whichever comes first."""

    def __post_init__(self):
        super().__post_init__()
        self.slow = False
        self.killed = threading.Event()
        self.graceful_began = threading.Event()

    def stop(self, timeout: float | None = None) -> bool:
        if timeout == 0 or not self.slow:
            if timeout == 0:
                self.killed.set()
            return super().stop(timeout)
        self.calls.append("stop")
        self.graceful_began.set()
        self.killed.wait(GRACE)
        was, self.running = self.running, False
        return was


def test_a_fence_during_a_graceful_stop_kills_at_once_and_confirms_once():
    cfg = config.parse({**BASE, "milvus": {"container": "milvus", "start_timeout": 5, "stop_timeout": GRACE}},
                       default_instance="test")
    sock, vips, link, clock = FakeSocket(), FakeVips(), FakeLink(), FakeClock()
    rt = SlowStopRuntime(running=True)
    ad = Adapters(make_socket=lambda: sock, vips=vips, announcer=FakeAnnouncer(), link=link, runtime=rt,
                  milvus_probe=object())
    d = Daemon(cfg, ad, log=structlog.get_logger("test"), clock=clock)
    try:
        with structlog.testing.capture_logs() as logs:
            _become_master(d, clock)
            assert d.machine.state == State.MASTER and str(d.machine.container) == "running"
            rt.slow = True
            higher = codec.encode(Advert(2, 51, 200, 1.0, ("198.18.0.50",), auth_type=1, password=b"1111"),
                                  src="198.18.0.21", dst="224.0.0.18")
            sock.deliver(higher, "198.18.0.21")          # a higher master: step down, stop with grace
            assert _until(d, rt.graceful_began.is_set, 5), "the graceful stop never began"
            assert d.machine.leaving == State.BACKUP and 0 not in _priorities(sock)
            d.post(LeaseLost("cannot prove the etcd lease of /service/havip/51/leader"))
            # Before: the LeaseLost was ignored while leaving, and the kill (had it been
            # asked) waited behind the graceful stop: GRACE seconds.
            assert _until(d, lambda: d.machine.state == State.FAULT, 5), \
                f"not fenced while the graceful stop runs: {d.machine.state}, {d.machine.container}"
        assert rt.killed.is_set() and not rt.running
        assert rt.calls[-3:] == ["stop", "stop(timeout=0)", "stop(timeout=0)"]   # graceful, urgent, ordered
        assert d.executor.counters["urgent_kills"] == 1
        assert _priorities(sock)[-1] == 0 and d.machine.hold
        reasons = [e.get("reason") or "" for e in logs if e["event"] in ("decision", "transition")]
        assert sum("stale stop answer dropped" in r for r in reasons) == 1, reasons   # the graceful one's
        assert [e for e in logs if e["event"] == "container_killed_out_of_order"]
    finally:
        rt.killed.set()
        d.close()
