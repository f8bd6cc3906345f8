"""The storage lease as a typed phase of the machine (havip.core.lease), composed with the
container's phase: each transition the single-writer promise forbids raises MachineError
where it would be written, in production code, not only in a property test. Also the
fence that turns a graceful stop in flight into a kill, and a LeaseLost about an older
etcd lease, dropped as stale."""

from __future__ import annotations

import dataclasses

import pytest

from havip.core import lease as lp
from havip.core.lease import Acquiring, Held, Releasing, Unheld
from havip.core.lifecycle import Leasing, MachineError, Running, Starting, Stopped, Stopping, Waiting
from havip.core.machine import Container, Machine, Params, step
from havip.core.transitions import _finish_leave, _release, _start
from havip.model import (
    ContainerReady, ContainerStopped, LeaseLost, LeaseReleased, LeaseResult, ReleaseLease, SendAdvert, State,
    StopContainer,
)
from tests.unit.test_machine import advert, params
from tests.unit.test_single_writer import answer, last, serving_leased

P = Params(version=3, priority=100, interval=1.0, supervise=True, lease=True)
MAY_RUN = [Starting(op=4), Running(), Stopping(op=5)]


# ---------------------------------------------------------------- the illegal transitions raise


@pytest.mark.parametrize("container", MAY_RUN, ids=lambda c: c.name)
@pytest.mark.parametrize("lease", [Held(op=2, since=1.0), Acquiring(op=3), Unheld()], ids=lambda x: x.name)
def test_releasing_the_lease_while_our_milvus_may_run_raises(container, lease):
    with pytest.raises(MachineError, match=f"while the container is {container.name}"):
        lp.release(lease, container, op=9)
    m = Machine(state=State.MASTER, phase=container, lease=lease, op_seq=8)
    with pytest.raises(MachineError, match="lease given back"):
        _release(m, P)


@pytest.mark.parametrize("container", [Stopped(), Waiting(gate_at=3.0), Leasing(op=None, retry_at=2.0)],
                         ids=lambda c: c.name)
def test_the_lease_goes_back_once_no_milvus_of_ours_can_run(container):
    m = Machine(state=State.BACKUP, phase=container, lease=Held(op=2, since=1.0), op_seq=8)
    m, acts = _release(m, P)
    assert acts == [ReleaseLease()] and m.lease == Releasing(op=9) and m.released_at_op == 9


def test_hole3_a_second_acquire_answer_cannot_release_the_lease_of_a_running_milvus():
    """Two acquires were in flight; the first started Milvus; the second says "already
    held". It is an idempotent yes: the lease stays held (before issue 10 it was released),
    and a release written on that path raises instead of reaching the storage."""
    r = serving_leased()
    held = r.m.lease
    assert isinstance(held, Held)
    d = r.do(LeaseResult(ok=True, reason="already held", op=r.m.op_seq + 1), r.now + 0.1)
    assert ReleaseLease() not in d.actions and r.m.lease == held and r.m.container == Container.RUNNING
    with pytest.raises(MachineError, match="while the container is running"):
        _release(r.m, P)


@pytest.mark.parametrize("container", MAY_RUN, ids=lambda c: c.name)
def test_priority_zero_while_the_container_is_not_confirmed_stopped_raises(container):
    m = Machine(state=State.MASTER, phase=container, lease=Held(op=2, since=1.0), leaving=State.BACKUP)
    with pytest.raises(MachineError, match=f"priority 0 while the container is {container.name}"):
        _finish_leave(m, P, 10.0, State.BACKUP, "a higher master")


def test_priority_zero_goes_out_once_the_stop_is_confirmed():
    m = Machine(state=State.MASTER, phase=Stopped(), lease=Unheld(void_before=7), leaving=State.BACKUP)
    d = _finish_leave(m, P, 10.0, State.BACKUP, "a higher master")
    assert d.actions[0] == SendAdvert(0)


@pytest.mark.parametrize("lease", [Unheld(), Acquiring(op=3), Releasing(op=4)], ids=lambda x: x.name)
def test_starting_milvus_without_a_held_lease_raises(lease):
    m = Machine(state=State.MASTER, phase=Leasing(op=3), lease=lease, op_seq=4)
    with pytest.raises(MachineError, match=f"milvus started while the storage lease is {lease.name}"):
        _start(m, P)


def test_a_grant_to_an_attempt_older_than_a_release_cannot_be_recorded():
    with pytest.raises(MachineError, match="after the release"):
        lp.granted(Acquiring(op=8, void_before=6), op=5, now=1.0)
    assert lp.is_void(Releasing(op=6), None)       # a release is out: any yes is older than it


def test_the_step_check_catches_a_handler_that_releases_beside_a_running_milvus():
    """The second net: even a decision built by hand past the transitions is refused."""
    from havip.core.lifecycle import checked

    before = Machine(state=State.MASTER, phase=Running(), lease=Held(op=2, since=1.0), op_seq=5)
    after = dataclasses.replace(before, lease=Releasing(op=6))
    decision = type("D", (), {"machine": after, "actions": (ReleaseLease(op=6),)})()
    with pytest.raises(MachineError, match="lease given back while the container is running"):
        checked(before, P, LeaseResult(ok=True, reason="already held"), decision)
    unrecorded = type("D", (), {"machine": dataclasses.replace(before, phase=Stopped()),
                                "actions": (ReleaseLease(op=6),)})()
    with pytest.raises(MachineError, match="not recorded in the lease's phase"):
        checked(before, P, ContainerStopped(ok=True, reason="stopped"), unrecorded)


# ---------------------------------------------------------------- the phase follows the answers


def test_the_lease_phase_follows_acquire_grant_release():
    r = serving_leased()
    assert isinstance(r.m.lease, Held) and r.m.lease.since == pytest.approx(r.now - 2)
    r.do(advert(200), r.now + 0.1)
    d = r.do(answer(last(r, StopContainer), ContainerStopped, ok=True, reason="stopped"), r.now + 1)
    rel = last(r, ReleaseLease)
    assert r.m.lease == Releasing(op=rel.op) and SendAdvert(0) not in d.actions
    d = r.do(answer(rel, LeaseReleased, ok=True, reason="released"), r.now + 0.01)
    assert r.m.lease == Unheld(void_before=rel.op) and d.actions[0] == SendAdvert(0)


def test_a_refusal_of_the_pending_attempt_leaves_the_lease_unheld():
    from tests.unit.test_machine import _leasing

    r = _leasing(params(supervise=True, lease=True))
    assert r.m.lease == Acquiring(op=r.m.lease_op, void_before=r.m.released_at_op)
    r.do(LeaseResult(ok=False, reason="held by h1", holder="h1", op=r.m.lease_op - 1), r.now + 0.01)
    assert isinstance(r.m.lease, Acquiring)        # an older attempt's no says nothing
    r.do(LeaseResult(ok=False, reason="held by h1", holder="h1", op=r.m.lease_op), r.now + 0.01)
    assert r.m.lease == Unheld(void_before=r.m.released_at_op) and r.m.container == Container.LEASING


# ---------------------------------------------------------------- a fence during a graceful stop


def test_a_fence_during_a_graceful_stop_kills_now_and_confirms_once():
    """A master steps down (a higher master: stop with grace, up to stop_timeout) and its
    etcd lease is lost meanwhile: the kill must not wait for the graceful stop. Before,
    the LeaseLost was ignored while leaving and the kill never came."""
    r = serving_leased()
    r.do(advert(200), r.now + 0.1)
    graceful = last(r, StopContainer)
    assert graceful.grace and r.m.leaving == State.BACKUP
    d = r.do(LeaseLost("cannot prove the etcd lease"), r.now + 0.5)
    (kill,) = [a for a in d.actions if isinstance(a, StopContainer)]
    assert kill.grace is False and kill.op > graceful.op and r.m.stop_op == kill.op
    assert "graceful stop in flight becomes a kill" in d.reason
    assert r.m.leaving == State.FAULT and r.m.hold
    # The graceful stop returns when the kill ended the container: its answer is stale.
    d = r.do(answer(graceful, ContainerStopped, ok=True, reason="stopped (0.6s)"), r.now + 0.1)
    assert "stale stop answer dropped" in d.reason and r.m.container == Container.STOPPING
    d = r.do(answer(kill, ContainerStopped, ok=True, reason="was not running"), r.now + 0.01)
    assert r.m.container == Container.STOPPED and ReleaseLease() in d.actions
    d = r.do(answer(last(r, ReleaseLease), LeaseReleased, ok=True, reason="revoked"), r.now + 0.01)
    assert d.transition == (State.MASTER, State.FAULT) and d.actions[0] == SendAdvert(0)


def test_a_lost_link_during_a_graceful_stop_also_kills_now():
    from havip.model import LinkChanged

    r = serving_leased()
    r.do(advert(200), r.now + 0.1)
    graceful = last(r, StopContainer)
    d = r.do(LinkChanged(up=False), r.now + 0.2)
    (kill,) = [a for a in d.actions if isinstance(a, StopContainer)]
    assert kill.grace is False and kill.op != graceful.op and r.state == State.FAULT


def test_a_kill_asked_over_a_failed_stop_waiting_to_retry_is_its_retry():
    r = serving_leased()
    r.do(advert(200), r.now + 0.1)
    r.do(answer(last(r, StopContainer), ContainerStopped, ok=False, reason="engine hung"), r.now + 1)
    d = r.do(LeaseLost("cannot prove the etcd lease"), r.now + 0.1)
    assert not [a for a in d.actions if isinstance(a, StopContainer)]
    d = r.tick(r.m.stop_retry_deadline)
    assert StopContainer(grace=False) in d.actions


# ---------------------------------------------------------------- LeaseLost carries the lease id


def _serving_on_etcd_lease(lease_id: int):
    r = serving_leased()
    r.m = dataclasses.replace(r.m, lease=dataclasses.replace(r.m.lease, lease_id=lease_id))
    return r


def test_a_lease_loss_about_an_older_etcd_lease_is_dropped_with_its_reason():
    r = _serving_on_etcd_lease(0x2b)
    d = r.do(LeaseLost("etcd says the lease 1a has expired", lease_id=0x1a), r.now + 0.1)
    assert d.actions == () and r.state == State.MASTER and r.m.container == Container.RUNNING
    assert d.reason == "stale lease loss dropped: it is about lease 1a, we hold lease 2b"
    d = r.do(LeaseLost("etcd says the lease 2b has expired", lease_id=0x2b), r.now + 0.1)
    assert StopContainer(grace=False) in d.actions and "fencing" in d.reason


def test_the_lease_id_of_the_grant_is_kept_with_the_held_lease():
    from tests.unit.test_machine import _leasing

    r = _leasing(params(supervise=True, lease=True))
    r.do(LeaseResult(ok=True, reason="etcd leader key taken", lease_id=0x101), r.now + 0.01)
    assert r.m.lease.lease_id == 0x101 and isinstance(r.m.phase, Starting)
    d = r.do(LeaseLost("lost", lease_id=0x100), r.now + 0.1)
    assert d.actions == () and "stale lease loss dropped" in d.reason
    r.do(ContainerReady(ok=True, reason="healthy"), r.now + 1)
    d = r.do(LeaseLost("lost", lease_id=0x101), r.now + 0.1)
    assert StopContainer(grace=False) in d.actions


def test_a_lease_loss_with_no_lease_held_is_stale():
    m = Machine(state=State.BACKUP, phase=Stopped(), lease=Unheld(void_before=3))
    d = step(m, P, LeaseLost("lost", lease_id=0x1a), 1.0)
    assert d.actions == () and d.reason == "stale lease loss dropped: it is about lease 1a, ours is unheld"


def test_a_lease_taken_by_an_older_attempt_goes_back_when_the_last_attempt_is_refused():
    """Hole 3's sequence the other way round: attempt #a is out when the host steps down;
    it becomes master again and sends #b; #a says yes (the lease is ours, #b will confirm
    it); the host steps down again, and #b fails (a storage error). Nothing of ours will run
    on that lease: it goes back instead of staying held until the next stop."""
    from tests.unit.test_machine import _leasing

    r = _leasing(params(supervise=True, lease=True))
    first = r.m.lease_op
    r.do(advert(200), r.now + 0.1)                                  # a higher master: step down
    assert r.state == State.BACKUP and isinstance(r.m.lease, Acquiring)
    for _ in range(10):                                             # it goes silent: master again
        if r.m.container == Container.LEASING:
            break
        r.tick(r.m.master_down_deadline if r.state == State.BACKUP else r.m.gate_deadline)
    second = r.m.lease_op
    assert r.state == State.MASTER and second > first
    d = r.do(LeaseResult(ok=True, reason="acquired", op=first), r.now + 0.01)
    assert "the pending attempt will confirm it" in d.reason and isinstance(r.m.lease, Held)
    r.do(advert(200), r.now + 0.1)                                  # steps down again: nothing runs
    assert r.state == State.BACKUP and r.m.container == Container.STOPPED and r.m.lease_held
    d = r.do(LeaseResult(ok=False, reason="storage error", holder="(error)", op=second), r.now + 0.1)
    assert ReleaseLease() in d.actions and isinstance(r.m.lease, Releasing)


def test_a_fence_verdict_that_crossed_the_step_down_kills_the_graceful_stop():
    """The lease check failed on the running Milvus as the master began to step down: the
    verdict (role "master") arrives after the role changed. It is not a stale verdict to
    ignore: the lease cannot be proven, so the graceful stop becomes a kill."""
    from havip.model import HealthChanged

    r = serving_leased()
    r.do(advert(200), r.now + 0.1)
    graceful = last(r, StopContainer)
    d = r.do(HealthChanged(healthy=False, reason="lease check failed: Input/output error", role="master",
                           fence=True), r.now + 0.2)
    (kill,) = [a for a in d.actions if isinstance(a, StopContainer)]
    assert kill.grace is False and kill.op > graceful.op and r.m.leaving == State.FAULT and r.m.hold
    d = r.do(HealthChanged(healthy=False, reason="milvus check failed", role="master"), r.now + 0.1)
    assert d.actions == ()                          # an ordinary verdict for the old role stays ignored
