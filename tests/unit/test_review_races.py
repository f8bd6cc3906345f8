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
from tests.unit.test_daemon import BASE, _settle, run_until as _until

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


# ---------------------------------------------------------------- a loss that overtakes its grant

def test_core_a_lease_reported_lost_before_its_grant_does_not_start_milvus():
    """etcd: the keep-alive of the lease an acquire has just taken cannot prove it (or etcd
    says it was revoked) and posts LeaseLost(id) before the worker posts that acquire's
    LeaseResult(ok, id). The loss was dropped as stale ("ours is acquiring") and the grant
    then started Milvus on a lease already lost: nothing fences it while Milvus starts."""
    from havip.core.machine import Container
    from havip.model import AddVip, LeaseResult, StartContainer
    from tests.unit.test_machine import _leasing, params

    p = params(supervise=True, lease=True)
    r = _leasing(p)
    op = r.m.lease_op
    r.do(LeaseLost("etcd says the lease 77 of /service/havip/51/leader has expired or was revoked",
                   lease_id=0x77), r.now + 0.01)
    d = r.do(LeaseResult(ok=True, reason="etcd leader key taken (lease 77)", op=op, lease_id=0x77), r.now + 0.01)
    assert not any(isinstance(a, (StartContainer, AddVip)) for a in d.actions), (d.actions, d.reason)
    assert r.m.container == Container.LEASING and not r.m.lease_held, (r.m.phase, r.m.lease)
    # The next attempt takes a new etcd lease, and that one starts Milvus.
    r.tick(r.now + 1.0)
    d = r.do(LeaseResult(ok=True, reason="etcd leader key taken (lease 78)", op=r.m.lease_op, lease_id=0x78),
             r.now + 0.01)
    assert any(isinstance(a, StartContainer) for a in d.actions) and r.m.lease.lease_id == 0x78


class LosingEtcdLease:
    """An etcd-like lease whose grant number `lose` is lost at once: its keep-alive thread
    reports the loss (on_lost, as EtcdLease._lose) before acquire() has returned to the
    worker. Other grants hold. `lost` names the lease ids reported lost."""

    backend = "etcd"
    path = key = "/service/havip/51/leader"

    def __init__(self, lose: int):
        self.lose = lose
        self.on_lost = None
        self.lease_id = None
        self.lost: set[int] = set()
        self.grants = 0
        self.calls: list[str] = []

    @property
    def held(self) -> bool:
        return self.lease_id is not None

    def acquire(self):
        from havip.runtime.lease import LeaseResult

        self.calls.append("acquire")
        if self.lease_id is not None and self.lease_id not in self.lost:
            return LeaseResult(True, f"etcd leader key already held (lease {self.lease_id:x})")
        self.grants += 1
        self.lease_id = 0x100 + self.grants
        if self.grants == self.lose:
            t = threading.Thread(target=self._lose, args=(self.lease_id,))
            t.start()
            t.join()
        return LeaseResult(True, f"etcd leader key taken (lease {self.lease_id:x})")

    def _lose(self, lease_id):
        self.lost.add(lease_id)
        self.on_lost(f"etcd says the lease {lease_id:x} has expired or was revoked", lease_id)

    def release(self):
        self.calls.append("release")
        was, self.lease_id = self.lease_id, None
        return f"lease {was:x} revoked" if was else None

    def renew(self):
        if self.lease_id is None or self.lease_id in self.lost:
            raise RuntimeError("lost")


class LeaseWatchingEngine(FakeRuntime):
    """Records, at each start, whether the lease it runs on was already reported lost."""

    def __post_init__(self):
        super().__post_init__()
        self.lease = None
        self.started_on_lost: list[int] = []

    def start(self) -> None:
        if self.lease.lease_id in self.lease.lost:
            self.started_on_lost.append(self.lease.lease_id)
        super().start()


def test_daemon_a_lease_lost_before_its_grant_is_reported_starts_no_milvus_on_it():
    # Grant 1 is the start-up guard's (given back after the confirmed stop); 2 the master's.
    lease = LosingEtcdLease(lose=2)
    rt = LeaseWatchingEngine(running=False)
    rt.lease = lease
    cfg = config.parse({**BASE, "milvus": {"container": "milvus", "start_timeout": 5, "stop_timeout": 1}},
                       default_instance="test")
    sock, vips, link, clock = FakeSocket(), FakeVips(), FakeLink(), FakeClock()
    ad = Adapters(make_socket=lambda: sock, vips=vips, announcer=FakeAnnouncer(), link=link, runtime=rt,
                  milvus_probe=object(), lease=lease)
    d = Daemon(cfg, ad, log=structlog.get_logger("test"), clock=clock)
    try:
        d.start()
        _settle(d)
        clock.advance(3.7)
        d.run_once()
        clock.advance(1.0)
        _settle(d)
        for _ in range(8):                      # lease retries, if any
            clock.advance(0.3)
            _settle(d)
        assert lease.lost, "the fake never lost its first lease"
        assert rt.started_on_lost == [], f"milvus started on etcd lease(s) {rt.started_on_lost} already reported lost"
        assert d.machine.state == State.MASTER and rt.running, (d.machine.phase, d.machine.lease, lease.calls)
    finally:
        d.close()


# ---------------------------------------------------------------- the start-up guard's lease lost

class GuardEtcdLease(LosingEtcdLease):
    """An etcd-like lease that grants and keeps its lease until the test reports it lost."""

    def __init__(self):
        super().__init__(lose=0)


def test_core_the_start_up_guards_lease_lost_kills_the_leftover_still_stopping():
    """A host finds a leftover Milvus at start-up: it takes the lease first (the guard, so
    the peer does not start beside the leftover) and stops the leftover with grace (up to
    stop_timeout). The guard's etcd lease is lost (this host cut off from etcd): it
    expires within fence_margin and the peer takes it and starts. The leftover must not
    drain through its grace meanwhile: the loss turns its graceful stop into a kill."""
    from havip.core.machine import Container
    from havip.model import LeaseResult, StopContainer
    from tests.unit.test_machine import Run, params

    p = params(supervise=True, lease=True)
    r = Run(p)
    assert r.m.container == Container.STOPPING and r.m.phase.grace and r.state == State.BACKUP
    guard = r.m.lease.op
    r.do(LeaseResult(ok=True, reason="etcd leader key taken (lease 55)", op=guard, lease_id=0x55), 0.05)
    assert r.m.lease_held
    d = r.do(LeaseLost("cannot prove the etcd lease 55", lease_id=0x55), 1.0)
    assert any(isinstance(a, StopContainer) and not a.grace for a in d.actions), (d.actions, d.reason)


def test_core_the_guards_lease_lost_while_shutting_down_kills_too():
    """The same while the daemon shuts down (SIGTERM) with that graceful stop pending: the
    machine waits for the stop and dropped every other event, a LeaseLost included."""
    from havip.model import LeaseResult, Shutdown, StopContainer
    from tests.unit.test_machine import Run, params

    p = params(supervise=True, lease=True)
    r = Run(p)
    r.do(LeaseResult(ok=True, reason="etcd leader key taken (lease 55)", op=r.m.lease.op, lease_id=0x55), 0.05)
    r.do(Shutdown(), 0.5)
    assert r.m.leaving == State.STOPPED and r.m.phase.grace
    d = r.do(LeaseLost("cannot prove the etcd lease 55", lease_id=0x55), 1.0)
    assert any(isinstance(a, StopContainer) and not a.grace for a in d.actions), (d.actions, d.reason)


def test_daemon_the_guards_lease_lost_kills_the_leftover_at_once():
    lease = GuardEtcdLease()
    rt = RacyEngine(running=True)                     # the leftover; its graceful stop lasts GRACE
    cfg = config.parse({**BASE, "milvus": {"container": "milvus", "start_timeout": 5, "stop_timeout": GRACE}},
                       default_instance="test")
    sock, vips, link, clock = FakeSocket(), FakeVips(), FakeLink(), FakeClock()
    ad = Adapters(make_socket=lambda: sock, vips=vips, announcer=FakeAnnouncer(), link=link, runtime=rt,
                  milvus_probe=object(), lease=lease)
    d = Daemon(cfg, ad, log=structlog.get_logger("test"), clock=clock)
    try:
        d.start()
        assert _until(d, rt.graceful_began.is_set, 5), "the leftover's graceful stop never began"
        assert _until(d, lambda: d.machine.lease_held, 5)
        lease._lose(lease.lease_id)                   # the keep-alive cannot prove it any more
        assert _until(d, lambda: not rt.running, 3), \
            f"the leftover drains through its grace on a lost guard lease: {rt.calls}, {d.machine.phase}"
    finally:
        with rt._ended:
            rt.running = False
            rt._ended.notify_all()
        d.close()


def test_core_the_owners_guard_lost_kills_its_leftover_and_still_starts_after():
    """The address owner (255) is master at once, its leftover stopping behind the gate:
    the kill keeps the gate (Milvus starts after the confirmed stop, on a new lease)."""
    from havip.core.machine import Container
    from havip.model import ContainerStopped, LeaseReleased, LeaseResult, ReleaseLease, StartContainer, StopContainer
    from tests.unit.test_machine import Run, params

    p = params(supervise=True, lease=True, priority=255)
    r = Run(p)
    assert r.state == State.MASTER and r.m.container == Container.STOPPING and r.m.phase.grace
    r.do(LeaseResult(ok=True, reason="etcd leader key taken (lease 55)", op=r.m.lease.op, lease_id=0x55), 0.05)
    d = r.do(LeaseLost("cannot prove the etcd lease 55", lease_id=0x55), 0.5)
    (kill,) = [a for a in d.actions if isinstance(a, StopContainer)]
    assert not kill.grace and r.m.phase.gate_at is not None
    r.do(ContainerStopped(ok=True, reason="killed", op=kill.op), 0.6)
    d = r.tick(r.m.phase.gate_at if r.m.phase.gate_at else r.now + 5)
    d = r.tick(r.now + 5)
    acquire = r.m.lease_op
    assert acquire is not None, (r.m.phase, r.m.lease)
    releases = [a for dd in r.decisions for a in dd.actions if isinstance(a, ReleaseLease)]
    r.do(LeaseReleased(ok=True, reason="revoked", op=releases[-1].op), r.now)
    d = r.do(LeaseResult(ok=True, reason="etcd leader key taken (lease 56)", op=acquire, lease_id=0x56), r.now)
    assert any(isinstance(a, StartContainer) for a in d.actions), (d.actions, d.reason)


def test_core_an_answer_without_lease_id_over_a_held_lease_reported_lost_starts_nothing():
    """Held lease 77 (an older attempt's yes) reported lost while the pending attempt is
    out; that attempt's yes carries no id (a backend that does not name it): it would keep
    77, lost: a refusal too, not a start (nor a MachineError that ends the loop)."""
    import dataclasses

    from havip.core.lease import Held
    from havip.model import LeaseResult, StartContainer
    from tests.unit.test_machine import _leasing, params

    p = params(supervise=True, lease=True)
    r = _leasing(p)
    op = r.m.lease_op
    r.m = dataclasses.replace(r.m, lease=Held(op - 1, r.now, 0x77, r.m.lease.void_before))
    assert r.do(LeaseLost("lost 77", lease_id=0x77), r.now + 0.01).actions == ()
    d = r.do(LeaseResult(ok=True, reason="already held", op=op), r.now + 0.01)
    assert not any(isinstance(a, StartContainer) for a in d.actions), (d.actions, d.reason)


# ---------------------------------------------------------------- SIGTERM, then the link goes

def test_core_a_master_shutting_down_that_loses_its_link_kills_instead_of_draining():
    """SIGTERM on the master: it stops Milvus with grace (up to stop_timeout), advertising
    meanwhile so the backup waits. Its link goes down: the backup hears nothing, takes over
    after master-down and starts its Milvus, while ours drains through its grace. A master
    that loses its link outside a shutdown kills at once for this reason; shutting down,
    the graceful stop went on."""
    from havip.model import LinkChanged, Shutdown, StopContainer
    from tests.unit.test_machine import params, serving

    p = params(supervise=True)
    r = serving(p)
    d = r.do(Shutdown(), r.now + 1)
    assert any(isinstance(a, StopContainer) and a.grace for a in d.actions) and r.m.leaving == State.STOPPED
    d = r.do(LinkChanged(up=False, detail="carrier lost"), r.now + 0.5)
    assert any(isinstance(a, StopContainer) and not a.grace for a in d.actions), (d.actions, d.reason)
    assert r.m.leaving == State.STOPPED


class WatchedSocket(FakeSocket):
    """Records, with every advert, whether our Milvus ran when it left."""

    def __init__(self, rt):
        super().__init__()
        self.rt = rt
        self.running_at_send: list[tuple[int, bool]] = []

    def send_to(self, payload: bytes, dst: str) -> None:
        super().send_to(payload, dst)
        adv = codec.decode(payload, src=self.source, dst="224.0.0.18", ttl=255, family=4)
        self.running_at_send.append((adv.priority, self.rt.running))


def _serving_daemon(rt, sock):
    cfg = config.parse({**BASE, "milvus": {"container": "milvus", "start_timeout": 5, "stop_timeout": GRACE}},
                       default_instance="test")
    vips, link, clock = FakeVips(), FakeLink(), FakeClock()
    ad = Adapters(make_socket=lambda: sock, vips=vips, announcer=FakeAnnouncer(), link=link, runtime=rt,
                  milvus_probe=object())
    d = Daemon(cfg, ad, log=structlog.get_logger("test"), clock=clock)
    d.start()
    _settle(d)
    clock.advance(3.7)
    d.run_once()
    clock.advance(1.0)
    _settle(d)
    assert d.machine.state == State.MASTER and str(d.machine.container) == "running"
    return d, link, clock


def test_daemon_sigterm_then_link_down_kills_at_once():
    rt = RacyEngine(running=False)
    sock = WatchedSocket(rt)
    d, link, clock = _serving_daemon(rt, sock)
    try:
        d.request_stop()                               # SIGTERM: graceful stop, advertising meanwhile
        assert _until(d, rt.graceful_began.is_set, 5)
        link.set(False)                                # the cable goes: the backup takes over soon
        assert _until(d, lambda: not rt.running, 3), f"milvus drains through its grace: {rt.calls}"
        assert _until(d, lambda: d.machine.state == State.STOPPED, 5)
        assert all(not running for prio, running in sock.running_at_send if prio == 0)
    finally:
        with rt._ended:
            rt.running = False
            rt._ended.notify_all()
        d.close()


def test_daemon_loop_dies_while_the_urgent_kill_runs_hands_over_safely():
    """The fence's kill runs out of order beside the graceful stop, and the loop dies right
    then (_fail_safe): the handover still waits for the ordered, confirmed stop; priority 0
    never leaves while Milvus runs, and serve() ends."""
    import threading as _t

    from havip.daemon.loop import EXIT_LOOP_FAILED

    rt = RacyEngine(running=False)
    sock = WatchedSocket(rt)
    d, link, clock = _serving_daemon(rt, sock)
    slow_kill = _t.Event()
    real_stop = rt.stop

    def stop(timeout=None):
        if timeout == 0 and not slow_kill.is_set():
            slow_kill.set()
            time.sleep(0.5)                            # the urgent kill is in flight when the loop dies
        return real_stop(timeout)
    rt.stop = stop
    try:
        higher = codec.encode(Advert(2, 51, 200, 1.0, ("198.18.0.50",), auth_type=1, password=b"1111"),
                              src="198.18.0.21", dst="224.0.0.18")
        sock.deliver(higher, "198.18.0.21")
        assert _until(d, rt.graceful_began.is_set, 5)
        d.post(LeaseLost("cannot prove the etcd lease"))
        assert _until(d, slow_kill.is_set, 5)
        link.drain_error = RuntimeError("a bug in the loop")
        link.set(True)                                 # wakes the loop into the bug
        out: list[int] = []
        th = _t.Thread(target=lambda: out.append(d.serve()))
        th.start()
        th.join(20)
        assert not th.is_alive(), "serve() did not end"
        assert out == [EXIT_LOOP_FAILED] and not rt.running
        assert all(not running for prio, running in sock.running_at_send if prio == 0), sock.running_at_send
    finally:
        with rt._ended:
            rt.running = False
            rt._ended.notify_all()
        d.close()
