"""The five holes of issue 10, each pinned by a test that failed on the code before the fix.

Machine-level tests feed the answers an ordered worker would give (the answer carries the
id of the operation it answers, copied from the action); daemon-level tests run the real
`Daemon` and `Executor` over the fakes with a real flock lease.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from havip.core.machine import Container, Machine, next_deadline
from havip.model import (
    AcquireLease, ContainerReady, ContainerStopped, LeaseReleased, LeaseResult, LinkChanged, ReleaseLease, SendAdvert,
    Shutdown, StartContainer, Startup, State, StopContainer,
)
from tests.unit.test_machine import Run, advert, params


def answer(action, cls, **kw):
    """The worker's answer to `action`, carrying its operation id (when events have one)."""
    if "op" in {f.name for f in dataclasses.fields(cls)}:
        kw["op"] = getattr(action, "op", None)
    return cls(**kw)


def last(r: Run, kind):
    for d in reversed(r.decisions):
        for a in reversed(d.actions):
            if isinstance(a, kind):
                return a
    raise AssertionError(f"no {kind.__name__} emitted")


def actions(r: Run, since: int = 0) -> list:
    return [a for d in r.decisions[since:] for a in d.actions]


def until(d, cond, timeout: float = 5.0) -> None:
    """Run the daemon's loop until cond() holds (worker answers arrive on their thread)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        d.run_once()


def serving_leased() -> Run:
    """A supervising master with the storage lease whose Milvus is up."""
    r = Run(params(priority=100, supervise=True, lease=True))
    r.do(answer(last(r, StopContainer), ContainerStopped, ok=True, reason="no leftover"), 0.1)
    r.tick(r.m.master_down_deadline)
    r.tick(next_deadline(r.m))
    r.do(answer(last(r, AcquireLease), LeaseResult, ok=True, reason="acquired"), r.now + 0.01)
    r.do(answer(last(r, StartContainer), ContainerReady, ok=True, reason="healthy"), r.now + 2)
    assert r.state == State.MASTER and r.m.container == Container.RUNNING
    return r


# ---------------------------------------------------------------- hole 1


def test_hole1_no_priority_zero_while_a_leftover_milvus_is_still_stopping():
    """A backup finds a container at start-up and stops it with grace (slow); it becomes
    master meanwhile; a higher master appears: it must not resign (priority 0) before the
    leftover is confirmed stopped, or the peer starts Milvus beside it."""
    r = Run(params(priority=100, supervise=True, lease=True))
    stop = last(r, StopContainer)                      # the leftover, stopping with grace
    r.tick(r.m.master_down_deadline)
    assert r.state == State.MASTER
    r.tick(next_deadline(r.m))                          # the settle window passes
    mark = len(r.decisions)
    r.do(advert(200), r.now + 0.1)                      # a higher master appears
    assert SendAdvert(0) not in actions(r, mark), "resigned while the leftover Milvus still runs"
    assert r.m.container == Container.STOPPING
    r.tick(r.now + 1.0)
    assert SendAdvert(0) not in actions(r, mark)
    d = r.do(answer(stop, ContainerStopped, ok=True, reason="stopped (9.8s)"), r.now + 0.5)
    assert SendAdvert(0) not in d.actions, "priority 0 before the lease is given back"
    r.do(answer(last(r, ReleaseLease), LeaseReleased, ok=True, reason="released"), r.now + 0.01)
    assert SendAdvert(0) in actions(r, mark) and r.state == State.BACKUP


def test_hole1_the_gate_opens_only_after_the_leftover_is_confirmed_stopped():
    r = Run(params(priority=100, supervise=True, lease=True))
    stop = last(r, StopContainer)
    r.tick(r.m.master_down_deadline)
    r.tick(next_deadline(r.m))
    assert r.state == State.MASTER
    # (the first decision's AcquireLease is the start-up guard over the leftover, below)
    assert not any(isinstance(a, (AcquireLease, StartContainer)) for a in actions(r, 1))
    d = r.do(answer(stop, ContainerStopped, ok=True, reason="stopped"), r.now + 2)
    assert any(isinstance(a, AcquireLease) for a in d.actions)
    assert r.m.container == Container.LEASING


# ---------------------------------------------------------------- hole 2


def test_hole2_shutdown_of_a_host_whose_stop_failed_waits_and_keeps_the_lease():
    """Fault after a link loss, the kill failed (engine hung): a shutdown must not end
    with the container unconfirmed, and must not give the lease back."""
    r = serving_leased()
    r.do(LinkChanged(up=False), r.now + 1)
    assert r.state == State.FAULT
    kill = last(r, StopContainer)
    r.do(answer(kill, ContainerStopped, ok=False, reason="docker: timeout"), r.now + 0.5)
    mark = len(r.decisions)
    r.do(Shutdown(), r.now + 0.1)
    assert r.state != State.STOPPED, "stopped with the container's stop never confirmed"
    assert not any(isinstance(a, ReleaseLease) for a in actions(r, mark))
    r.tick(r.now + 1.0)                                 # the stop is retried
    retry = last(r, StopContainer)
    d = r.do(answer(retry, ContainerStopped, ok=True, reason="killed"), r.now + 0.3)
    assert r.state == State.STOPPED
    assert ReleaseLease() in d.actions, "the lease is given back once the stop is confirmed"


def test_hole2_daemon_shutdown_with_a_hung_engine_leaves_the_lease_held(tmp_path):
    from havip.runtime.lease import StorageLease
    from tests.fakes import fail
    from tests.unit.test_daemon import _become_master, _with_lease

    d, sock, vips, clock, rt = _with_lease(tmp_path)
    _become_master(d, clock)
    until(d, lambda: d.machine.container == Container.RUNNING)
    assert d.machine.state == State.MASTER and rt.running
    rt.stop_error = fail("docker: the engine does not answer")
    d.ad.link.set(False)
    until(d, lambda: d.machine.state == State.FAULT and d.machine.stop_retry_deadline is not None)
    assert rt.running
    d.request_stop()
    for _ in range(10):                                 # the forced-shutdown limit (16 s) passes
        clock.advance(4.0)
        d.run_once()
        if d.machine.state == State.STOPPED:
            break
    d.close()
    assert rt.running
    assert not StorageLease(str(tmp_path / ".havip-lease"), "h1").acquire().ok, \
        "the peer got the lease while our Milvus may still run"


# ---------------------------------------------------------------- hole 3


def test_hole3_a_late_second_lease_answer_never_releases_a_running_milvus():
    """Two acquires in flight: the first is answered after the host left and came back;
    Milvus starts on it; the second answers "already held" and must not give it back."""
    r = Run(params(priority=100, supervise=True, lease=True))
    r.do(answer(last(r, StopContainer), ContainerStopped, ok=True, reason="no leftover"), 0.1)
    r.tick(r.m.master_down_deadline)
    r.tick(next_deadline(r.m))
    first = last(r, AcquireLease)                       # slow storage: no answer yet
    r.do(advert(200), r.now + 0.1)                      # leave: higher master
    assert r.state == State.BACKUP
    r.tick(r.m.master_down_deadline)                    # it went silent: master again
    r.tick(next_deadline(r.m)) if r.m.container == Container.WAITING else None
    second = last(r, AcquireLease)
    assert second is not first
    mark = len(r.decisions)
    r.do(answer(first, LeaseResult, ok=True, reason="acquired (epoch 3)"), r.now + 0.5)
    later = second
    if not any(isinstance(a, StartContainer) for a in actions(r, mark)):
        # (since issue 10 only the pending attempt's answer starts Milvus)
        r.do(answer(second, LeaseResult, ok=True, reason="already held"), r.now + 0.1)
        later = first                                   # delivered twice, late
    start = last(r, StartContainer)
    r.do(answer(start, ContainerReady, ok=True, reason="healthy"), r.now + 1)
    assert r.m.container == Container.RUNNING
    r.do(answer(later, LeaseResult, ok=True, reason="already held"), r.now + 0.1)
    assert not any(isinstance(a, ReleaseLease) for a in actions(r, mark)), \
        "the lease of a running Milvus was given back"


# ---------------------------------------------------------------- hole 4


def test_hole4_reload_changes_the_v2_master_down_interval():
    from havip import config
    from tests.unit.test_daemon import BASE, make

    d, sock, vips, link, clock, rt = make()
    d.start()
    assert d.machine.state == State.BACKUP
    new = config.parse({**BASE, "advert_interval": 5}, default_instance="test")
    d.apply_config(new)
    assert d.machine.master_adver_interval == 5.0
    # RFC 3768 6.1: 3 * 5 + skew; the old 3.6 s would have the backup take over between adverts.
    assert d.machine.master_down_deadline >= clock() + 15.0
    st = d.status()                                     # what `havipctl status --json` shows
    assert st["advert_interval"] == 5 and 15.0 < st["master_down_interval"] < 16.0, st
    clock.advance(4.9)
    d.run_once()
    assert d.machine.state == State.BACKUP
    d.close()


def test_hole4_a_master_reloaded_to_a_shorter_interval_advertises_at_the_new_one():
    from havip import config
    from tests.unit.test_daemon import BASE, make

    d, sock, vips, link, clock, rt = make(advert_interval=5)
    d.start()
    clock.advance(16.0)
    d.run_once()
    assert d.machine.state == State.MASTER
    d.apply_config(config.parse({**BASE, "advert_interval": 1}, default_instance="test"))
    assert d.machine.adver_deadline <= clock() + 1.0
    d.close()


# ---------------------------------------------------------------- hole 5


def test_hole5_the_address_owner_stops_a_leftover_container_first():
    r = Run(params(priority=255, supervise=True, lease=True))
    assert r.state == State.MASTER
    stop = last(r, StopContainer)
    for _ in range(5):
        nd = next_deadline(r.m)
        r.tick(nd if nd is not None and nd > r.now else r.now + 1)
    assert not any(isinstance(a, (AcquireLease, StartContainer)) for a in actions(r, 1)), \
        "the owner started Milvus beside a leftover one"
    d = r.do(answer(stop, ContainerStopped, ok=True, reason="stopped"), r.now + 0.1)
    assert any(isinstance(a, AcquireLease) for a in d.actions)


# ---------------------------------------------------------------- preconditions in production code


def test_a_transition_that_would_abandon_a_pending_stop_raises():
    from havip.core.machine import MachineError, Params, Stopped, Stopping, _checked

    p = Params(version=2, priority=100, interval=1.0, supervise=True)
    before = Machine(state=State.BACKUP, phase=Stopping(op=3))
    after = dataclasses.replace(before, phase=Stopped())
    with pytest.raises(MachineError, match="pending stop"):
        _checked(before, p, Shutdown(), type("D", (), {"machine": after, "actions": ()})())


def test_stale_answers_are_dropped_with_a_reason():
    r = Run(params(priority=100, supervise=True))
    stop = last(r, StopContainer)
    d = r.do(ContainerStopped(ok=True, reason="an old stop", op=stop.op - 1 if stop.op else 99), 0.1)
    assert r.m.container == Container.STOPPING
    assert d.reason and "stale" in d.reason
    r.do(answer(stop, ContainerStopped, ok=True, reason="stopped"), 0.2)
    assert r.m.container == Container.STOPPED


# ---------------------------------------------------------------- fence on lease loss


@pytest.mark.parametrize("paused", [False, True])
def test_fence_kills_milvus_and_drops_the_vip_at_once(paused):
    from havip.model import DelVip, HealthChanged, PauseChanged

    r = serving_leased()
    if paused:
        r.do(PauseChanged(paused=True), r.now + 0.1)
    d = r.do(HealthChanged(healthy=False, reason="lease check failed: Input/output error", role="master",
                           fence=True), r.now + 1)
    assert d.actions[:2] == (DelVip(), StopContainer(grace=False))
    assert "fencing" in d.reason and r.m.leaving == State.FAULT
    kill = last(r, StopContainer)
    d = r.do(answer(kill, ContainerStopped, ok=True, reason="killed"), r.now + 0.3)
    assert ReleaseLease() in d.actions
    r.do(answer(last(r, ReleaseLease), LeaseReleased, ok=False, reason="storage did not answer"), r.now + 2)
    assert r.state == State.FAULT


def test_a_leaving_master_resigns_only_after_the_lease_is_given_back():
    """The peer answers our priority 0 after its skew time with an acquire: the lease must
    be free by then (before issue 10 the executor released it before posting the stop)."""
    r = serving_leased()
    r.do(advert(200), r.now + 1)
    d = r.do(answer(last(r, StopContainer), ContainerStopped, ok=True, reason="stopped"), r.now + 2)
    assert [type(a).__name__ for a in d.actions] == ["ReleaseLease"]
    stale = r.do(LeaseReleased(ok=True, reason="an older release", op=last(r, ReleaseLease).op - 1), r.now + 0.01)
    assert r.state == State.MASTER and stale.actions == ()
    d = r.do(answer(last(r, ReleaseLease), LeaseReleased, ok=True, reason="released"), r.now + 0.01)
    assert d.actions[0] == SendAdvert(0) and r.state == State.BACKUP


# ---------------------------------------------------------------- a leftover on the backup, seen end to end


def test_a_host_with_a_leftover_holds_the_lease_until_it_is_stopped():
    """Seen in the e2e lab on the code before issue 10 (test_backup_stops_a_stale_container_
    at_startup, under load): h2 stops a leftover Milvus at start-up while h1 becomes master
    and starts its own beside it. Now h2 takes the lease first and holds it until the
    leftover's stop is confirmed."""
    r = Run(params(priority=50, supervise=True, lease=True))
    first = r.first.actions
    guard = next(a for a in first if isinstance(a, AcquireLease))
    assert first.index(guard) < first.index(next(a for a in first if isinstance(a, StopContainer)))
    d = r.do(answer(guard, LeaseResult, ok=True, reason="acquired"), 0.01)
    assert d.actions == () and r.m.lease_held
    d = r.do(answer(last(r, StopContainer), ContainerStopped, ok=True, reason="stopped (9.9s)"), 10.0)
    assert ReleaseLease() in d.actions and not r.m.lease_held


def test_pair_a_leftover_stopping_on_the_backup_holds_the_new_master_back():
    from tests.unit.sim import Sim

    a = params(priority=100, address="10.0.0.1", supervise=True, lease=True)
    b = params(priority=50, address="10.0.0.2", supervise=True, lease=True)
    net = Sim(a, b)
    net.b.running = net.b.leftover = True
    net.b.stop_delay = 10.0                     # milvus-lite draining, or a slow engine
    net.at(0.0, 0, Startup())
    net.at(0.5, 1, Startup())
    net.run_until(60.0)
    assert net.a.m.state == State.MASTER and net.a.m.container == Container.RUNNING
    assert net.overlaps == [] and net.violations == []


def test_a_lease_answer_older_than_a_release_never_starts_milvus():
    """Found by the simulator: the start-up guard's acquire answered late, after its
    ReleaseLease had run and while a newer acquire was pending; starting on it would have
    started Milvus without the lease."""
    r = Run(params(priority=100, supervise=True, lease=True))
    guard = last(r, AcquireLease)
    r.do(answer(last(r, StopContainer), ContainerStopped, ok=True, reason="nothing to stop"), 0.1)
    assert r.m.released_at_op > guard.op
    r.tick(r.m.master_down_deadline)
    r.tick(next_deadline(r.m))
    assert r.m.container == Container.LEASING
    d = r.do(answer(guard, LeaseResult, ok=True, reason="acquired"), r.now + 0.2)
    assert StartContainer() not in d.actions and "void" in d.reason
    d = r.do(answer(last(r, AcquireLease), LeaseResult, ok=True, reason="acquired"), r.now + 0.1)
    assert StartContainer() in d.actions
