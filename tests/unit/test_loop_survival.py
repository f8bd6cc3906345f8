"""Issue 9: no input stops the loop, and a loop that dies anyway hands over as on SIGTERM.

Over the fakes: an input whose handling raises is a counted drop and the daemon stays
master; an exception outside the input paths ends the loop, but the VIP is removed,
Milvus stopped, priority 0 sent, and the exit status says it failed.
"""

from __future__ import annotations

import structlog

from havip.daemon.loop import EXIT_LOOP_FAILED
from havip.daemon.receive import Receiver
from havip.core.machine import Container
from havip.model import State
from tests.unit.test_daemon import _become_master, _priorities, _settle, make


class _ExplodingReceiver(Receiver):
    def handle(self, pkt, cfg, own):
        super().handle(pkt, cfg, own)
        raise KeyError("healthy")


def test_an_advert_whose_handling_raises_is_a_counted_drop():
    d, sock, vips, link, clock, rt = make(milvus=True)
    _become_master(d, clock)
    d.receiver = _ExplodingReceiver(log=d.log, clock=clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(50):
            sock.deliver(b"\x21\x33\x01\x01\x01\x01\x00\x00", "198.18.0.99")
        d.run_once()
    assert d.machine.state == State.MASTER and vips.attached and rt.running
    assert d.input_errors["advert"] == 50
    assert d.receiver.drops["internal_error"] == 50
    assert d.status()["input_errors"] == {"advert": 50}
    assert len([e for e in logs if e["event"] == "input_failed"]) == 1       # rate-limited


def test_a_socket_that_raises_is_counted_and_the_loop_goes_on():
    d, sock, vips, link, clock, rt = make()
    _become_master(d, clock)
    sock.recv_error = RuntimeError("recvmsg returned garbage")
    sock.deliver(b"x", "198.18.0.99")
    d.run_once()
    sock.recv_error = None
    clock.advance(1.0)
    d.run_once()
    assert d.machine.state == State.MASTER and d.input_errors["advert"] == 1


def test_a_control_call_that_raises_answers_its_caller_and_is_counted():
    d, sock, vips, link, clock, rt = make()
    _become_master(d, clock)
    fut = d.call(lambda: {}["missing"])
    d.run_once()
    assert isinstance(fut.exception(timeout=1), KeyError)
    assert d.machine.state == State.MASTER and d.input_errors["control"] == 1


def test_an_adapter_bug_fails_the_action_not_the_loop():
    d, sock, vips, link, clock, rt = make()
    d.start()
    vips.error = RuntimeError("pyroute2 said something unexpected")
    clock.advance(3.7)
    d.run_once()
    assert d.machine.state == State.MASTER
    assert d.executor.counters["error_AddVip"] == 1
    assert "unexpected error" in d.executor.last_error


def test_a_loop_that_dies_hands_over_as_on_sigterm_and_exits_non_zero():
    d, sock, vips, link, clock, rt = make(milvus=True)
    _become_master(d, clock)
    assert vips.attached and rt.running
    sent = len(sock.sent)
    link.drain_error = RuntimeError("netlink monitor bug")
    link.set(True)                                   # makes the link readable: the loop calls drain()
    with structlog.testing.capture_logs() as logs:
        status = d.serve()
    assert status == EXIT_LOOP_FAILED != 0
    assert not vips.attached and vips.calls[-1] == "remove"
    assert not rt.running and rt.calls[-1] == "stop"
    assert _priorities(sock)[sent:][-1] == 0          # resigned, as on SIGTERM
    assert d.machine.state == State.STOPPED
    assert any(e["event"] == "loop_failed" and "netlink monitor bug" in e["error"] for e in logs)
    assert sock.closed


def test_when_even_the_handover_fails_the_blunt_cleanup_runs():
    d, sock, vips, link, clock, rt = make(milvus=True)
    _become_master(d, clock)

    def broken_feed(event):
        raise RuntimeError("the machine itself is broken")

    d.feed = broken_feed                              # every step raises, Shutdown included
    link.drain_error = RuntimeError("first failure")
    link.set(True)
    with structlog.testing.capture_logs():
        assert d.serve() == EXIT_LOOP_FAILED
    assert not vips.attached and not rt.running
    assert _priorities(sock)[-1] == 0


def test_a_loop_that_dies_while_the_lease_is_being_taken_gives_the_late_grant_back():
    """The loop dies while the storage lease is being taken (the storage is slow): the
    handover stops at once (no Milvus runs yet), but the grant that arrives afterwards must
    still reach the machine, which gives it back; serve() drains for that, and so must the
    fail-safe, or the peer finds the lease held by a host that is gone."""
    import threading

    from tests.fakes import FakeLease

    d, sock, vips, link, clock, rt = make(milvus=True)
    lease = FakeLease(holder="h2")
    d.ad.lease = d.executor.lease = lease
    d.params = d._params("")
    d.start()
    _settle(d)                                          # the start-up guard: leftover stopped, lease back
    assert rt.calls == ["stop"] and lease.calls == ["acquire", "release"] and not lease.held
    lease.hang = threading.Event()
    clock.advance(3.7)
    d.run_once()
    clock.advance(1.0)
    _settle(d)
    assert d.machine.state == State.MASTER and d.machine.container == Container.LEASING
    assert lease.calls[-1] == "acquire" and not lease.held
    threading.Timer(0.3, lease.hang.set).start()        # the storage answers after the loop died
    link.drain_error = RuntimeError("netlink monitor bug")
    link.set(True)
    with structlog.testing.capture_logs() as logs:
        assert d.serve() == EXIT_LOOP_FAILED
    assert lease.calls[-2:] == ["acquire", "release"], "the late grant was never given back"
    assert not lease.held
    assert not any(e["event"] == "lease_kept" for e in logs)
    assert not rt.running


def _blunt(stop_error=None):
    """A master holding the lease whose loop dies and whose machine cannot hand over: the
    executor's emergency_stop runs (havip cleanup's order)."""
    from tests.fakes import FakeLease

    d, sock, vips, link, clock, rt = make(milvus=True)
    _become_master(d, clock)
    lease = FakeLease(holder="h2", board={"holder": "h2"})      # held, as a serving master's
    seen: list[bool] = []
    release = lease.release
    lease.release = lambda: (seen.append(rt.running), release())[1]
    d.ad.lease = d.executor.lease = lease
    rt.stop_error = stop_error

    def broken_feed(event):
        raise RuntimeError("the machine itself is broken")

    d.feed = broken_feed
    link.drain_error = RuntimeError("first failure")
    link.set(True)
    with structlog.testing.capture_logs() as logs:
        assert d.serve() == EXIT_LOOP_FAILED
    return lease, seen, sock, rt, logs


def test_the_blunt_cleanup_releases_the_lease_only_after_the_confirmed_stop():
    lease, seen, sock, rt, logs = _blunt()
    assert seen == [False], "the lease went back while Milvus ran"
    assert not lease.held and not rt.running
    assert _priorities(sock)[-1] == 0


def test_the_blunt_cleanup_keeps_the_lease_when_the_stop_fails():
    from tests.fakes import fail

    lease, seen, sock, rt, logs = _blunt(fail("docker: the engine does not answer"))
    assert seen == [] and lease.held and rt.running
    assert 0 not in _priorities(sock), "priority 0 sent while our Milvus may run"
    assert any(e["event"] == "lease_kept" for e in logs)


def test_the_mount_warning_is_for_a_lease_file_not_an_etcd_key(monkeypatch):
    """The etcd lease's `path` is its key (/service/havip/51/leader): looked up in
    /proc/self/mounts it lands on `/`, and a root on NFS with nolock (a diskless host)
    made the daemon warn that the etcd lease could not see the other host's lock."""
    from havip.runtime import lease as lease_mod
    from havip.runtime.etcdlease import EtcdLease
    from tests.fakes import FakeLease

    asked: list[str] = []
    monkeypatch.setattr(lease_mod, "mount_warning", lambda path: asked.append(path) or f"{path} on nfs, nolock")
    for lease, warned in ((FakeLease(path="/s/.havip-lease"), True),
                          (EtcdLease(["http://198.18.0.1:2379"], "/service/havip/51/leader", "h2/test"), False)):
        d, *_ = make(milvus=True)
        d.ad.lease = lease
        with structlog.testing.capture_logs() as logs:
            d.start()
        assert any(e["event"] == "lease_unsafe" for e in logs) == warned, lease.path
        d.close()
    assert asked == ["/s/.havip-lease"]


def test_the_blunt_cleanup_stops_after_a_start_in_flight_not_beside_it():
    """The machine breaks while Milvus is being started (the engine has the start request
    but has not run it yet). A stop beside it found nothing running, gave the lease back
    and sent priority 0, and then that Milvus came up: running, lease-less, with the peer
    taking over. The stop now runs on the ordered worker, after the start."""
    import threading

    from tests.fakes import FakeLease

    d, sock, vips, link, clock, rt = make(milvus=True)
    lease = FakeLease(holder="h2")
    d.ad.lease = d.executor.lease = lease
    d.params = d._params("")
    go, done = threading.Event(), threading.Event()
    start = rt.start

    def slow_start():
        go.wait(5)
        start()
        done.set()

    rt.start = slow_start
    _become_master(d, clock)
    assert d.machine.container == Container.STARTING and lease.held and not rt.running
    seen: list[bool] = []
    release = lease.release
    lease.release = lambda: (seen.append(rt.running), release())[1]

    def broken_feed(event):
        raise RuntimeError("the machine itself is broken")

    d.feed = broken_feed
    threading.Timer(0.3, go.set).start()                 # the engine runs the start after the loop died
    link.drain_error = RuntimeError("first failure")
    link.set(True)
    with structlog.testing.capture_logs():
        assert d.serve() == EXIT_LOOP_FAILED
    assert done.wait(5)
    assert not rt.running, "a Milvus started after the emergency stop and runs on"
    assert seen == [False] and not lease.held
    assert _priorities(sock)[-1] == 0


def test_the_blunt_cleanup_keeps_the_lease_when_the_worker_stays_busy(monkeypatch):
    """A start that never returns (a hung engine) holds the ordered worker: the blunt
    cleanup stops Milvus from the loop's thread after a bounded wait, but keeps the lease
    and sends no priority 0, since that start may still come through."""
    import threading

    from havip.daemon import executor as executor_mod
    from tests.fakes import FakeLease

    monkeypatch.setattr(executor_mod, "EMERGENCY_WORKER_WAIT", 0.2)
    d, sock, vips, link, clock, rt = make(milvus=True)
    lease = FakeLease(holder="h2")
    d.ad.lease = d.executor.lease = lease
    d.params = d._params("")
    hung = threading.Event()
    rt.start = lambda: hung.wait(10)
    _become_master(d, clock)
    assert d.machine.container == Container.STARTING and lease.held

    def broken_feed(event):
        raise RuntimeError("the machine itself is broken")

    d.feed = broken_feed
    link.drain_error = RuntimeError("first failure")
    link.set(True)
    try:
        with structlog.testing.capture_logs() as logs:
            assert d.serve() == EXIT_LOOP_FAILED
    finally:
        hung.set()
    assert lease.held and "release" not in lease.calls[2:]
    assert 0 not in _priorities(sock)
    assert any(e["event"] == "emergency_step_failed" and "start may be under way" in e["error"] for e in logs)
