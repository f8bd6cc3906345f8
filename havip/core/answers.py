"""The machine's answers: what the workers report back (ContainerReady, ContainerStopped,
LeaseResult, LeaseReleased, LeaseLost) and the fence they may call for.

Every answer carries the id of the operation it answers; an answer to anything but the
pending operation is stale and dropped with its sentence (the loop logs it).
"""

from __future__ import annotations

from dataclasses import replace

from havip.core import lease as lease_phase
from havip.core.lease import Held
from havip.core.lifecycle import MAY_RUN, Container, Leasing, Running, Stopped, Stopping, Waiting
from havip.core.state import LEASE_RETRY, LOST_KEPT, STOP_RETRY, Decision, Machine, Params
from havip.core.transitions import _finish_leave, _kill_pending, _leave_master, _open_gate, _release, _start, _stop
from havip.model import ContainerReady, ContainerStopped, LeaseLost, LeaseReleased, LeaseResult, State


def _stale(kind: str, got: int | None, pending: int | None) -> str | None:
    """Why an answer is stale (it answers an operation other than the pending one), or None."""
    if got is None or got == pending:
        return None
    wanted = f"#{pending} is pending" if pending is not None else "none is pending"
    return f"stale {kind} answer dropped: it answers #{got}, {wanted}"


def _container_ready(m: Machine, p: Params, ev: ContainerReady, now: float) -> Decision:
    stale = _stale("start", ev.op, m.start_op)
    if stale:
        return Decision(m, (), stale)
    if m.state != State.MASTER or m.container != Container.STARTING or m.leaving:
        return Decision(m)
    if ev.ok:
        return Decision(replace(m, phase=Running()), (), f"milvus is serving: {ev.reason}")
    return _leave_master(m, p, now, State.FAULT, f"milvus did not become healthy: {ev.reason}; giving up mastership",
                         grace=False, hold=True)


def _container_stopped(m: Machine, p: Params, ev: ContainerStopped, now: float) -> Decision:
    if m.container != Container.STOPPING:
        return Decision(m)   # no stop pending (a hand-built answer, or one after a shutdown)
    stale = _stale("stop", ev.op, m.stop_op)
    if stale:
        return Decision(m, (), stale)
    if not ev.ok:
        m = replace(m, phase=replace(m.phase, retry_at=now + STOP_RETRY))
        return Decision(m, (), f"milvus could not be stopped: {ev.reason}; retrying, and not handing over")
    # Confirmed: no Milvus of ours runs. Only now may the lease go back and priority 0 go out.
    was = m.phase
    m = replace(m, phase=Stopped())
    m, release = _release(m, p)
    if m.leaving is not None and release and m.state == State.MASTER and m.link_up:
        # The lease goes back before priority 0, so the peer that answers it finds it free
        # (the release is bounded: a hung storage answers LeaseReleased(ok=False)).
        return Decision(m, tuple(release), f"{ev.reason}; giving the storage lease back before resigning")
    if m.leaving is not None:
        return _finish_leave(m, p, now, m.leaving, m.reason, tuple(release))
    if m.state == State.MASTER and was.gate_at is not None:
        return Decision(replace(m, phase=Waiting(was.gate_at)), tuple(release), ev.reason)
    if m.state == State.MASTER and was.start_after:
        m, more, then = _open_gate(m, p)
        return Decision(m, (*release, *more), f"{ev.reason}; {then}")
    return Decision(m, tuple(release), ev.reason)


def _lease(m: Machine, p: Params, ev: LeaseResult, now: float) -> Decision:
    wanted = m.state == State.MASTER and m.container == Container.LEASING and not m.leaving
    stale = _stale("lease", ev.op, m.lease_op)
    kept = m.lease.lease_id if isinstance(m.lease, Held) else None
    granted_id = ev.lease_id if ev.lease_id is not None else kept
    if ev.ok and granted_id is not None and granted_id in m.lost_leases:
        # The keep-alive of the lease this acquire took reported it lost before this answer
        # reached us: it proves nothing, and Milvus must not start on it. A refusal: the
        # next attempt takes a new etcd lease (the backend drops the lost one).
        ev = replace(ev, ok=False, holder=None,
                     reason=f"{ev.reason}, but etcd lease {granted_id:x} was already reported lost")
    if ev.ok and lease_phase.is_void(m.lease, ev.op):
        # A ReleaseLease ran after this attempt on the ordered worker: the lease it took is
        # gone again. Only the answer to the pending attempt may start Milvus.
        return Decision(m, (), f"{stale or 'lease answer'}: void, the lease was given back after it")
    if ev.ok:
        # The lease is ours now (acquire is idempotent); an older attempt's yes does not start
        # Milvus, the pending one will say "already held".
        m = replace(m, lease=lease_phase.granted(m.lease, ev.op, now, ev.lease_id))
        if wanted and not stale:
            m, start = _start(m, p)
            return Decision(m, tuple(start), f"{ev.reason}; starting milvus")
        if wanted:
            return Decision(m, (), f"{stale}; the lease is ours, the pending attempt will confirm it")
        if m.container in MAY_RUN:
            # Our Milvus may run on it (or its stop is pending; also the start-up guard over
            # a leftover): it goes back only after a confirmed stop.
            return Decision(m, (), f"{ev.reason}: kept while a milvus of ours may run here")
        m, release = _release(m, p)
        return Decision(m, tuple(release), f"{stale or 'lease granted'} after we stopped needing it: given back")
    m = replace(m, lease=lease_phase.refused(m.lease, ev.op))
    if not wanted and isinstance(m.lease, Held) and m.container not in MAY_RUN and m.leaving is None:
        # An older attempt took the lease (hole 3's window) and the attempt that would have
        # used it says no: nothing of ours will run on it, so it goes back, as a late yes does.
        m, release = _release(m, p)
        return Decision(m, tuple(release), f"{stale or 'lease refused'}; the lease an older attempt took is "
                                           "given back: we stopped needing it")
    if stale:
        return Decision(m, (), stale)
    if not wanted:
        return Decision(m)
    # Another host holds it (a split brain, or its havip died before `havip cleanup`):
    # no VIP, no Milvus here; try again shortly. Say so once per holder, not every try.
    said = m.lease_holder == (ev.holder or ev.reason)
    m = replace(m, phase=Leasing(None, retry_at=now + LEASE_RETRY, holder=ev.holder or ev.reason))
    return Decision(m, (), None if said else f"milvus waits: {ev.reason}; retrying every {LEASE_RETRY}s")


def _fence(m: Machine, p: Params, now: float, reason: str) -> Decision:
    """The storage lease is lost or cannot be proven: another host may hold it now, so wait
    neither for `fall` nor for an operator's pause. The VIP goes and Milvus is killed at
    once (Patroni demotes in the cycle its leader key fails); the lease goes back after
    the confirmed stop and before priority 0 (_container_stopped), and the host is held
    back so that it does not take over again while the peer waits for the lease. Both
    paths come here: a failed `lease` check (HealthChanged.fence) and the etcd
    keep-alive's LeaseLost."""
    return _leave_master(m, p, now, State.FAULT, f"{reason}; fencing: milvus killed at once", grace=False,
                         hold=True)


def graceful_stop_leaving(m: Machine) -> bool:
    """A master steps down and stops Milvus with grace (up to stop_timeout)."""
    return m.state == State.MASTER and m.leaving is not None and isinstance(m.phase, Stopping) and m.phase.grace


def _fence_leaving(m: Machine, reason: str) -> Decision:
    """A fence while stepping down with a graceful stop in flight: the lease may move once
    it expires, so that stop becomes a kill now (see _stop: a new op supersedes it), and
    the host is held back as after any fence."""
    target = State.STOPPED if m.leaving == State.STOPPED else State.FAULT
    m, kill = _stop(replace(m, leaving=target, hold=True, reason=f"{reason}; fenced"), grace=False)
    return Decision(m, tuple(kill), f"{reason}; fencing: the graceful stop in flight becomes a kill")


def _lease_lost(m: Machine, p: Params, ev: LeaseLost, now: float) -> Decision:
    if ev.lease_id is not None and ev.lease_id not in m.lost_leases:
        # Remembered: this loss may have overtaken the answer of the acquire that took it.
        m = replace(m, lost_leases=(*m.lost_leases, ev.lease_id)[-LOST_KEPT:])
    held = m.lease.lease_id if isinstance(m.lease, Held) else None
    if ev.lease_id is not None and held is not None and ev.lease_id != held:
        # A keep-alive of an older etcd lease (given back, or lost and replaced by a new
        # acquire) says it lost that one: the lease we hold now is not in question.
        return Decision(m, (), f"stale lease loss dropped: it is about lease {ev.lease_id:x}, "
                               f"we hold lease {held:x}")
    if ev.lease_id is not None and not isinstance(m.lease, Held):
        return Decision(m, (), f"stale lease loss dropped: it is about lease {ev.lease_id:x}, "
                               f"ours is {m.lease.name}")
    if graceful_stop_leaving(m):
        return _fence_leaving(m, ev.reason)
    if isinstance(m.phase, Stopping) and m.phase.grace and isinstance(m.lease, (Held, lease_phase.Acquiring)):
        # A leftover found at start-up drains under the start-up guard's lease, which may
        # now expire and go to the peer: it must not drain through its grace meanwhile.
        m, kill = _kill_pending(m)
        return Decision(m, tuple(kill), f"{ev.reason}; the milvus still stopping here is killed at once")
    # Fencing by time: even while Milvus starts (no check runs then, see check_role).
    if m.state != State.MASTER or m.leaving or m.container not in (Container.STARTING, Container.RUNNING):
        return Decision(m)
    return _fence(m, p, now, ev.reason)


def _lease_released(m: Machine, p: Params, ev: LeaseReleased, now: float) -> Decision:
    after = lease_phase.released(m.lease, ev.op)
    if after is None:
        return Decision(m)   # not the release still out (an acquire followed it)
    m = replace(m, lease=after)
    if m.leaving is None or m.container != Container.STOPPED:
        return Decision(m)
    reason = m.reason if ev.ok else f"{m.reason} ({ev.reason})"
    return _finish_leave(m, p, now, m.leaving, reason)
