"""LeaseLost: a holder that can no longer prove its etcd lease fences at once, whether
Milvus runs or is still starting (no check runs then), and then holds back."""

from __future__ import annotations

from havip.core.machine import Container, check_role
from havip.model import (
    AddVip, ContainerReady, ContainerStopped, DelVip, HealthChanged, LeaseLost, LeaseReleased, LeaseResult,
    ReleaseLease, SendAdvert, StartContainer, State, StopContainer,
)
from tests.unit.test_machine import _leasing, params

LOST = "cannot prove the etcd lease of /service/havip/51/leader: no keep-alive answered for 5.6s"


def _starting():
    p = params(supervise=True, lease=True)
    r = _leasing(p)
    d = r.do(LeaseResult(ok=True, reason="etcd leader key taken"), r.now + 0.01)
    assert StartContainer() in d.actions and r.m.container == Container.STARTING
    return p, r


def test_lease_lost_while_starting_fences_without_grace():
    p, r = _starting()
    assert check_role(r.m) == "none"          # no check would notice
    d = r.do(LeaseLost(LOST), r.now + 1)
    assert d.actions == (DelVip(), StopContainer(grace=False))
    assert d.reason == f"{LOST}; fencing: milvus killed at once; stopping milvus before handing over"
    d = r.do(ContainerStopped(ok=True, reason="killed"), r.now + 0.2)
    # Only after the confirmed stop is the lease given back, and only then priority 0.
    (release,) = [a for a in d.actions if isinstance(a, ReleaseLease)]
    assert SendAdvert(0) not in d.actions
    d = r.do(LeaseReleased(ok=True, reason="etcd lease revoked", op=release.op), r.now + 0.01)
    assert d.transition == (State.MASTER, State.FAULT) and SendAdvert(0) in d.actions
    assert r.m.hold                           # it must not take the master back while the peer waits


def test_lease_lost_while_running_fences():
    p, r = _starting()
    r.do(ContainerReady(ok=True, reason="healthy"), r.now + 1)
    assert r.m.container == Container.RUNNING
    d = r.do(LeaseLost(LOST), r.now + 1)
    assert StopContainer(grace=False) in d.actions and DelVip() in d.actions
    # Fenced hosts come back as a held-back backup once their standby checks pass.
    d = r.do(ContainerStopped(ok=True, reason="killed"), r.now + 0.2)
    (release,) = [a for a in d.actions if isinstance(a, ReleaseLease)]
    r.do(LeaseReleased(ok=True, reason="etcd lease revoked", op=release.op), r.now + 0.01)
    d = r.do(HealthChanged(healthy=True, reason="could serve", role="backup"), r.now + 1)
    assert d.transition == (State.FAULT, State.BACKUP) and r.m.hold


def test_lease_lost_is_ignored_when_nothing_runs_on_it():
    p = params(supervise=True, lease=True)
    r = _leasing(p)
    assert r.do(LeaseLost(LOST), r.now + 0.1).actions == ()         # still taking it: nothing to fence
    p, r = _starting()
    r.do(LeaseLost(LOST), r.now + 0.1)
    assert r.do(LeaseLost(LOST), r.now + 0.1).actions == ()         # already leaving
    assert AddVip() not in r.decisions[-1].actions


def _fenced(event, paused: bool = False):
    from havip.model import PauseChanged

    p, r = _starting()
    r.do(ContainerReady(ok=True, reason="healthy"), r.now + 1)
    if paused:
        r.do(PauseChanged(paused=True), r.now + 0.1)
    d = r.do(event, r.now + 1)
    return r, d


def test_lease_lost_and_a_failed_lease_check_fence_alike():
    """Two paths to one decision (the etcd keep-alive's LeaseLost, the `lease` check's
    HealthChanged.fence): the same actions and the same machine, paused or not: no grace,
    held back, the lease given back only after the confirmed stop."""
    check = HealthChanged(healthy=False, reason=LOST, role="master", fence=True)
    for paused in (False, True):
        r1, d1 = _fenced(LeaseLost(LOST), paused)
        r2, d2 = _fenced(check, paused)
        assert d1.actions == d2.actions == (DelVip(), StopContainer(grace=False, op=d1.actions[1].op))
        assert d1.reason == d2.reason
        assert (r1.m.leaving, r1.m.hold, r1.m.phase) == (r2.m.leaving, r2.m.hold, r2.m.phase) == \
            (State.FAULT, True, r1.m.phase)
        # The other path's verdict arriving next changes nothing.
        assert r1.do(check, r1.now + 0.1).actions == () and r2.do(LeaseLost(LOST), r2.now + 0.1).actions == ()
