"""The machine's transitions: the only functions that replace the container's phase
(_start, _stop, _acquire, _open_gate, _shut_gate), the lease's phase (_acquire, _release,
through havip.core.lease) or the VRRP state (_enter_*, _leave_master, _finish_leave).

Each keeps its precondition itself: a start needs a held lease, a release a container that
cannot run, priority 0 (_resign) a container confirmed stopped; a violation raises
MachineError here, before any action leaves the machine.
"""

from __future__ import annotations

from dataclasses import replace

from havip.core import lease as lease_phase
from havip.core.lifecycle import MAY_RUN, Container, Leasing, MachineError, Starting, Stopped, Stopping, Waiting
from havip.core.state import (
    Decision, Machine, Params, _peer_down, advertised_priority, effective_priority, master_down,
)
from havip.model import (
    AcquireLease, Action, AddVip, DelVip, Notify, ReleaseLease, SendAdvert, SendGarp, StartContainer, State,
    StopContainer,
)


def _next_op(m: Machine) -> tuple[Machine, int]:
    return replace(m, op_seq=m.op_seq + 1), m.op_seq + 1


def _start(m: Machine, p: Params) -> tuple[Machine, list[Action]]:
    if p.lease:
        lease_phase.require_held(m.lease, "milvus started")
    m, op = _next_op(m)
    return replace(m, phase=Starting(op)), [AddVip(), SendGarp(), StartContainer(op=op)]


def _stop(m: Machine, grace: bool = True) -> tuple[Machine, list[Action]]:
    """Stop the container; a stop already pending stands (the one worker would run a second
    one only after it anyway) and its retries keep its grace, unless a kill supersedes a
    graceful one. Its gate, if any, is dropped: only _enter_master shuts one over a pending
    stop (_shut_gate)."""
    if isinstance(m.phase, Stopping):
        ph = replace(m.phase, gate_at=None, start_after=False, grace=m.phase.grace and grace)
        if m.phase.grace and not grace and m.phase.retry_at is None:
            # A graceful stop is in flight and a kill is wanted now (a fence, a lost link, a
            # failed Milvus): it must not wait up to stop_timeout behind that stop. A new
            # stop without grace supersedes it (the executor kills out of order, see
            # Executor._urgent_kill); the graceful stop's answer is then stale.
            m, op = _next_op(m)
            return replace(m, phase=replace(ph, op=op)), [StopContainer(grace=False, op=op)]
        # Else its retries go without grace if this stop wanted none.
        return replace(m, phase=ph), []
    m, op = _next_op(m)
    return replace(m, phase=Stopping(op, grace)), [StopContainer(grace=grace, op=op)]


def _kill_pending(m: Machine) -> tuple[Machine, list[Action]]:
    """A graceful stop pending becomes a kill now, its gate and its start-after kept (the
    lease it drains under is in question: the start-up guard's over a leftover). A new op
    supersedes the one in flight (the executor kills out of order); a stop waiting to
    retry just retries without grace."""
    ph = m.phase
    if not (isinstance(ph, Stopping) and ph.grace):
        return m, []
    if ph.retry_at is not None:
        return replace(m, phase=replace(ph, grace=False)), []
    m, op = _next_op(m)
    return replace(m, phase=replace(ph, op=op, grace=False)), [StopContainer(grace=False, op=op)]


def _acquire(m: Machine, holder: str | None = None) -> tuple[Machine, list[Action]]:
    m, op = _next_op(m)
    return replace(m, phase=Leasing(op, holder=holder), lease=lease_phase.acquire(m.lease, op)), [AcquireLease(op=op)]


def _release(m: Machine, p: Params) -> tuple[Machine, list[Action]]:
    """Give the lease back: only once no Milvus of ours can run (lease.release raises). Also
    after a confirmed stop with no lease known here: that clears a record this host left
    `held` when it was killed."""
    if not p.lease:
        return m, []
    m, op = _next_op(m)
    return replace(m, lease=lease_phase.release(m.lease, m.phase, op)), [ReleaseLease(op=op)]


def _resign(m: Machine) -> list[Action]:
    """RFC 5798 6.4.3: a master that stops sends an advert with priority 0; the peer takes
    over after its skew time, so only once no Milvus of ours can run."""
    if m.phase.name in MAY_RUN:
        raise MachineError(f"priority 0 while the container is {m.phase.name}: a pending stop abandoned")
    return [SendAdvert(0)] if m.link_up and m.state == State.MASTER else []


def _open_gate(m: Machine, p: Params) -> tuple[Machine, list[Action], str]:
    """Nothing on the wire stops us any more: start Milvus, behind the storage lease if any,
    and behind a pending stop (a leftover container found at start-up) if any."""
    if isinstance(m.phase, Stopping):
        m = replace(m, phase=replace(m.phase, gate_at=None, start_after=True))
        return m, [], "milvus starts once the container still stopping here is confirmed stopped"
    if p.lease:
        m, acts = _acquire(m)
        return m, acts, "taking the storage lease"
    m, acts = _start(m, p)
    return m, acts, "starting milvus"


def _shut_gate(m: Machine, gate_at: float) -> Machine:
    """Shut the gate until `gate_at`, over a pending stop if there is one (never instead of it)."""
    if isinstance(m.phase, Stopping):
        return replace(m, phase=replace(m.phase, gate_at=gate_at, start_after=False))
    return replace(m, phase=Waiting(gate_at))


def _gate_shut(m: Machine) -> bool:
    return m.state == State.MASTER and m.leaving is None and m.gate_deadline is not None


def _to(m: Machine, p: Params, new: State, reason: str, now: float, actions: list[Action],
        **changes) -> Decision:
    old = m.state
    m = replace(m, state=new, since=now, reason=reason, transitions=m.transitions + 1, **changes)
    actions = [*actions, Notify(state=new, priority=effective_priority(m, p))]
    return Decision(m, tuple(actions), reason, (old, new))


def _enter_backup(m: Machine, p: Params, now: float, reason: str, actions=(), **changes) -> Decision:
    if m.state in (State.INIT, State.FAULT):
        changes.setdefault("eligible_since", now)
    m = replace(m, adver_deadline=None, garp_deadline=None, leaving=None, boost=False, **changes)
    m = replace(m, master_down_deadline=now + master_down(m, p))
    acts: list[Action] = [*actions, DelVip()]
    if p.supervise and m.container != Container.STOPPED:
        m, more = _stop(m)
        acts += more
    return _to(m, p, State.BACKUP, reason, now, acts)


def _enter_fault(m: Machine, p: Params, now: float, reason: str, actions=(), *, grace: bool = True,
                 **changes) -> Decision:
    m = replace(m, adver_deadline=None, garp_deadline=None, master_down_deadline=None, leaving=None,
                boost=False, **changes)
    acts: list[Action] = [*actions, DelVip()]
    if p.supervise and m.container != Container.STOPPED:
        m, more = _stop(m, grace)
        acts += more
    return _to(m, p, State.FAULT, reason, now, acts)


def _enter_master(m: Machine, p: Params, now: float, reason: str, **changes) -> Decision:
    m = replace(m, master_down_deadline=None, adver_deadline=now + p.interval,
                garp_deadline=(now + p.garp_refresh) if p.garp_refresh else None,
                healthy=None, leaving=None, hold=False, **changes)
    acts: list[Action] = [SendAdvert(advertised_priority(replace(m, state=State.MASTER), p))]
    if not p.supervise:
        acts += [AddVip(), SendGarp()]
    else:
        prev = m.master
        # We must have listened for a whole master-down interval before we can know that
        # nobody else is master (an owner at start-up, a takeover right after start).
        settle = m.listening_since + master_down(m, p)
        if prev is None:
            # Nobody heard since we started listening: another host may be electing
            # itself at this very moment (both started together). One advert interval
            # lets its advert reach us before any Milvus starts.
            settle = max(settle, now + p.interval)
        # A container still stopping here (a leftover found at start-up) stays Stopping
        # behind the gate: the gate never overwrites a pending stop.
        if prev is not None and prev.priority > 0 and now < prev.last_seen + _peer_down(m, p, prev.interval):
            # The previous master is still alive: wait for its priority 0 (or silence).
            m = _shut_gate(m, max(prev.last_seen + _peer_down(m, p, prev.interval), settle))
            reason += f"; milvus waits until {prev.address} has stopped its own"
        elif now < settle and not (prev is not None and prev.priority == 0):
            m = _shut_gate(m, settle)
            reason += f"; milvus waits {settle - now:.2f}s to be sure no other master is there"
        else:
            m, more, then = _open_gate(m, p)
            acts += more
            reason += f"; {then}"
    return _to(m, p, State.MASTER, reason, now, acts)


def _leave_master(m: Machine, p: Params, now: float, target: State, reason: str, *, grace: bool = True,
                  **changes) -> Decision:
    """Give up mastership; with a container to stop, keep advertising until it is down.

    grace=False when Milvus has already failed: a server that does not answer its health
    check cannot act on a stop signal either (a hung one would cost the whole stop
    timeout), and nothing of a dead one is left to shut down cleanly."""
    m = replace(m, **changes)
    if p.supervise and m.container in MAY_RUN:
        # The VIP goes first: no write may reach a Milvus that is shutting down (milvus-lite
        # was seen to acknowledge a batch during its shutdown and lose it). The price is
        # the server's drain of connections that can no longer answer.
        m = replace(m, leaving=target, reason=reason, garp_deadline=None)
        m, stop = _stop(m, grace)
        return Decision(m, (DelVip(), *stop), f"{reason}; stopping milvus before handing over")
    return _finish_leave(m, p, now, target, reason)


def _finish_leave(m: Machine, p: Params, now: float, target: State, reason: str,
                  first: tuple[Action, ...] = ()) -> Decision:
    acts: list[Action] = [*first, *_resign(m)]
    m = replace(m, phase=Stopped())
    if target == State.BACKUP:
        return _enter_backup(m, p, now, reason, acts)
    if target == State.FAULT:
        return _enter_fault(m, p, now, reason, acts, healthy=None)
    m = replace(m, adver_deadline=None, garp_deadline=None, leaving=None, master_down_deadline=None)
    if m.lease_held and not any(isinstance(a, ReleaseLease) for a in acts):
        m, rel = _release(m, p)
        acts += rel
    return _to(m, p, State.STOPPED, reason, now, [*acts, DelVip()])

