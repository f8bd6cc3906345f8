"""The VRRP state machine (RFC 5798 section 6, RFC 3768 section 6) plus Milvus supervision.

`step(machine, params, event, now)` is a pure function: it returns the next machine,
the actions to apply (data, see havip.model) and, when something notable happened, the
sentence that explains it. No sockets, no netlink, no Docker, no clock of its own.

Single writer on the shared storage. A master that leaves (checks failed, planned
handover, shutdown, a higher priority appeared) removes the VIP and stops its container
first, *keeps advertising* while the container stops, and only then sends priority 0.
A new master starts its container only once the previous master has resigned (priority
0) or has been silent for a master-down interval, and attaches the VIP only then too (so
clients never follow the ARP to a Milvus that is not up). So two havip hosts never run Milvus
at once, as long as a container stop is confirmed (see docs/architecture.md for the one
window that cannot be closed: a master that loses its link cannot tell anyone).

When the hosts cannot hear each other at all (split brain), VRRP elects two masters. With
a storage lease (havip.runtime.lease), a new master takes the lease before the VIP and the
container, and keeps trying while another host holds it: only the holder runs Milvus.

The machine alone owns the container's and the lease's lifecycle. Every StartContainer,
StopContainer and AcquireLease carries an operation id; the answer carries it back, and an
answer to anything but the pending operation is stale and dropped, with its sentence. A
pending stop is never abandoned: no path may start, resign (priority 0), give the lease
back or end the daemon before it is confirmed, and `step` raises MachineError if a
handler ever tries (checked on every decision, in production). Only the machine gives the
lease back, with ReleaseLease, once no Milvus of ours can run.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from havip.model import (
    AcquireLease, Action, AddVip, AdvertReceived, ContainerReady, ContainerStopped, DelVip, Event,
    FailoverRequested, HealthChanged, LeaseLost, LeaseReleased, LeaseResult, LinkChanged, Notify, ParamsChanged,
    PauseChanged, PeerView,
    ReleaseLease, SendAdvert, SendGarp, Shutdown, StartContainer, Startup, State, StopContainer, Tick,
)
from havip.core.lifecycle import (  # noqa: F401 - re-exported: the machine's public names
    MAY_RUN, Container, Leasing, MachineError, Phase, Running, Starting, Stopped, Stopping, Waiting, checked as _checked,
)
from havip.protocol import timing

OWNER_PRIORITY = 255
TAKEOVER_PRIORITY = 254  # a planned takeover outranks every non-owner (RFC 5798 5.2.4)
STOP_RETRY = 1.0         # seconds between attempts to stop a container that would not stop
LEASE_RETRY = 0.25       # seconds between attempts to take a storage lease another host holds




@dataclass(frozen=True, slots=True)
class Params:
    """What the machine needs from the configuration."""

    version: int
    priority: int
    interval: float
    preempt: bool = True
    preempt_delay: float = 0.0
    address: str = ""          # our primary address: breaks priority ties (RFC 5798 6.4.3)
    supervise: bool = False    # drive a Milvus container
    garp_refresh: float = 0.0
    interface: str = "eth0"
    lease: bool = False        # take the storage lease before starting the container


@dataclass(frozen=True, slots=True)
class Machine:
    state: State = State.INIT
    since: float = 0.0
    reason: str = "not started"
    started_at: float = 0.0
    master_adver_interval: float = 1.0
    adver_deadline: float | None = None
    master_down_deadline: float | None = None
    garp_deadline: float | None = None
    master: PeerView | None = None       # the last other master seen on the wire
    phase: Phase = Stopped()             # the container, with the data of its phase
    leaving: State | None = None         # master on its way out, waiting for the container
    healthy: bool | None = None
    link_up: bool = True
    paused: bool = False
    hold: bool = False                   # do not preempt back: planned handover, or Milvus failed here
    boost: bool = False                  # planned takeover: advertise TAKEOVER_PRIORITY
    op_seq: int = 0                      # the last operation id handed out
    lease_held: bool = False             # an acquire said yes and no ReleaseLease since
    released_at_op: int = 0              # the op id of the last ReleaseLease (answers before it are void)
    release_op: int | None = None        # the ReleaseLease a leaving master waits for before priority 0
    transitions: int = 0
    listening_since: float = 0.0       # since when adverts could reach us (start-up, link up)
    eligible_since: float = 0.0        # since when we are a backup again (start-up, out of Fault)

    # Read-only views of the phase (status, tests, the timers).
    @property
    def container(self) -> Container:
        return self.phase.name

    @property
    def gate_deadline(self) -> float | None:
        return self.phase.gate_at if isinstance(self.phase, (Waiting, Stopping)) else None

    @property
    def stop_retry_deadline(self) -> float | None:
        return self.phase.retry_at if isinstance(self.phase, Stopping) else None

    @property
    def lease_retry_deadline(self) -> float | None:
        return self.phase.retry_at if isinstance(self.phase, Leasing) else None

    @property
    def lease_holder(self) -> str | None:
        return self.phase.holder if isinstance(self.phase, Leasing) else None

    @property
    def stop_op(self) -> int | None:
        return self.phase.op if isinstance(self.phase, Stopping) else None

    @property
    def start_op(self) -> int | None:
        return self.phase.op if isinstance(self.phase, Starting) else None

    @property
    def lease_op(self) -> int | None:
        return self.phase.op if isinstance(self.phase, Leasing) else None


@dataclass(frozen=True, slots=True)
class Decision:
    machine: Machine
    actions: tuple[Action, ...] = ()
    reason: str | None = None            # the sentence, when something notable happened
    transition: tuple[State, State] | None = None


def effective_priority(m: Machine, p: Params) -> int:
    if p.priority == OWNER_PRIORITY:
        return OWNER_PRIORITY
    return max(p.priority, TAKEOVER_PRIORITY) if m.boost else p.priority


def _peer_down(m: Machine, p: Params, peer_interval: float) -> float:
    """Master-down interval for a master that advertises every `peer_interval` (RFC 5798 6.1)."""
    return timing.master_down_interval(p.version, effective_priority(m, p), peer_interval)


def master_down(m: Machine, p: Params) -> float:
    return timing.master_down_interval(p.version, effective_priority(m, p), m.master_adver_interval)


def check_role(m: Machine) -> str:
    """Which checks apply: the running Milvus ("master"), none while it starts or stops,
    or whether this host could serve if promoted ("backup")."""
    if m.state == State.MASTER:
        return "master" if m.container == Container.RUNNING and m.leaving is None else "none"
    return "backup"


# ---------------------------------------------------------------- transitions


def _next_op(m: Machine) -> tuple[Machine, int]:
    return replace(m, op_seq=m.op_seq + 1), m.op_seq + 1


def _start(m: Machine) -> tuple[Machine, list[Action]]:
    m, op = _next_op(m)
    return replace(m, phase=Starting(op)), [AddVip(), SendGarp(), StartContainer(op=op)]


def _stop(m: Machine, grace: bool = True) -> tuple[Machine, list[Action]]:
    """Stop the container; a stop already pending stands (the one worker would run a second
    one only after it anyway) and its retries keep its grace. Its gate, if any, is dropped:
    only _enter_master shuts one over a pending stop (_shut_gate)."""
    if isinstance(m.phase, Stopping):
        # Its retries go without grace if this stop wanted none (a lost link, a failed Milvus).
        return replace(m, phase=replace(m.phase, gate_at=None, start_after=False, grace=m.phase.grace and grace)), []
    m, op = _next_op(m)
    return replace(m, phase=Stopping(op, grace)), [StopContainer(grace=grace, op=op)]


def _acquire(m: Machine, holder: str | None = None) -> tuple[Machine, list[Action]]:
    m, op = _next_op(m)
    return replace(m, phase=Leasing(op, holder=holder)), [AcquireLease(op=op)]


def _release(m: Machine, p: Params) -> tuple[Machine, list[Action]]:
    """Give the lease back: only once no Milvus of ours can run (see _checked). Also after a
    confirmed stop with no lease known here: that clears a record this host left `held`
    when it was killed."""
    if not p.lease:
        return m, []
    m, op = _next_op(m)
    return replace(m, lease_held=False, released_at_op=op), [ReleaseLease(op=op)]


def _open_gate(m: Machine, p: Params) -> tuple[Machine, list[Action], str]:
    """Nothing on the wire stops us any more: start Milvus, behind the storage lease if any,
    and behind a pending stop (a leftover container found at start-up) if any."""
    if isinstance(m.phase, Stopping):
        m = replace(m, phase=replace(m.phase, gate_at=None, start_after=True))
        return m, [], "milvus starts once the container still stopping here is confirmed stopped"
    if p.lease:
        m, acts = _acquire(m)
        return m, acts, "taking the storage lease"
    m, acts = _start(m)
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
    m = replace(m, adver_deadline=None, garp_deadline=None, leaving=None, release_op=None, boost=False, **changes)
    m = replace(m, master_down_deadline=now + master_down(m, p))
    acts: list[Action] = [*actions, DelVip()]
    if p.supervise and m.container != Container.STOPPED:
        m, more = _stop(m)
        acts += more
    return _to(m, p, State.BACKUP, reason, now, acts)


def _enter_fault(m: Machine, p: Params, now: float, reason: str, actions=(), *, grace: bool = True,
                 **changes) -> Decision:
    m = replace(m, adver_deadline=None, garp_deadline=None, master_down_deadline=None, leaving=None, release_op=None,
                boost=False, **changes)
    acts: list[Action] = [*actions, DelVip()]
    if p.supervise and m.container != Container.STOPPED:
        m, more = _stop(m, grace)
        acts += more
    return _to(m, p, State.FAULT, reason, now, acts)


def _enter_master(m: Machine, p: Params, now: float, reason: str, **changes) -> Decision:
    m = replace(m, master_down_deadline=None, adver_deadline=now + p.interval,
                garp_deadline=(now + p.garp_refresh) if p.garp_refresh else None,
                healthy=None, leaving=None, release_op=None, hold=False, **changes)
    acts: list[Action] = [SendAdvert(effective_priority(m, p))]
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
    if m.container in MAY_RUN:
        raise MachineError(f"leaving for {target} with the container {m.container}: a pending stop abandoned")
    # RFC 5798 6.4.3: a master that stops sends an advert with priority 0.
    acts: list[Action] = [*first, *([SendAdvert(0)] if m.link_up and m.state == State.MASTER else [])]
    m = replace(m, phase=Stopped())
    if target == State.BACKUP:
        return _enter_backup(m, p, now, reason, acts)
    if target == State.FAULT:
        return _enter_fault(m, p, now, reason, acts, healthy=None)
    m = replace(m, adver_deadline=None, garp_deadline=None, leaving=None, release_op=None, master_down_deadline=None)
    if m.lease_held and not any(isinstance(a, ReleaseLease) for a in acts):
        m, rel = _release(m, p)
        acts += rel
    return _to(m, p, State.STOPPED, reason, now, [*acts, DelVip()])


# ---------------------------------------------------------------- events


def _startup(m: Machine, p: Params, ev: Startup, now: float) -> Decision:
    m = replace(Machine(), started_at=now, since=now, listening_since=now, master_adver_interval=p.interval,
                link_up=ev.interface_up, phase=Running() if p.supervise else Stopped())
    # The container is assumed running so that start-up stops a stale one: the old
    # recipe's backup never stopped it, and two Milvus on one storage is the failure.
    # With a lease, the lease is taken first (one try, ahead of the stop on the worker)
    # and held until the stop is confirmed: a peer that becomes master meanwhile finds it
    # held and does not start Milvus beside the leftover (its attempts retry).
    guard: list[Action] = []
    if p.supervise and p.lease:
        m, op = _next_op(m)
        guard = [AcquireLease(op=op)]
    if not ev.interface_up:
        d = _enter_fault(m, p, now, f"interface {p.interface} is down; waiting for it")
    elif p.priority == OWNER_PRIORITY:
        # The owner too stops a container it finds before its own may start (behind the gate).
        stop: list[Action] = []
        if p.supervise:
            m, stop = _stop(m)
        d = _enter_master(m, p, now, "priority 255: this host owns the addresses (RFC 5798 6.4.1)")
        d = replace(d, actions=(*([DelVip(), *stop] if p.supervise else []), *d.actions))
    else:
        d = _enter_backup(m, p, now, f"started; waiting {master_down(m, p):.2f}s for a master's advert")
    return replace(d, actions=(*guard, *d.actions)) if guard else d


def _takeover_reason(m: Machine, p: Params, now: float) -> str:
    prev = m.master
    if prev is None:
        return f"no master advertised within {master_down(m, p):.2f}s; taking over"
    if prev.priority == 0:
        return f"master {prev.address} resigned (priority 0); taking over after the skew time"
    if now - prev.last_seen < master_down(m, p) and prev.priority < effective_priority(m, p):
        return (f"master {prev.address} has priority {prev.priority}, lower than ours "
                f"{effective_priority(m, p)}; preempting")
    return f"master {prev.address} silent for {now - prev.last_seen:.2f}s; taking over"


def _tick(m: Machine, p: Params, now: float) -> Decision:
    retry: list[Action] = []
    if isinstance(m.phase, Stopping) and m.phase.retry_at is not None and now >= m.phase.retry_at:
        m, op = _next_op(m)
        m = replace(m, phase=replace(m.phase, op=op, retry_at=None))
        retry.append(StopContainer(grace=m.phase.grace, op=op))
    d = _tick_timers(m, p, now)
    return replace(d, actions=(*retry, *d.actions)) if retry else d


def _tick_timers(m: Machine, p: Params, now: float) -> Decision:
    if m.state == State.BACKUP and m.master_down_deadline is not None and now >= m.master_down_deadline:
        if m.paused:
            m = replace(m, master_down_deadline=now + master_down(m, p))
            return Decision(m, (), "paused: the master looks down, but automatic takeover is off")
        return _enter_master(m, p, now, _takeover_reason(m, p, now))
    if m.state != State.MASTER:
        return Decision(m)
    acts: list[Action] = []
    reason = None
    if m.adver_deadline is not None and now >= m.adver_deadline:
        acts.append(SendAdvert(effective_priority(m, p)))
        nxt = m.adver_deadline + p.interval
        m = replace(m, adver_deadline=nxt if nxt > now else now + p.interval)
    if m.garp_deadline is not None and now >= m.garp_deadline:
        acts.append(SendGarp())
        m = replace(m, garp_deadline=now + p.garp_refresh)
    if m.paused:
        # No container actions while paused; look again an interval later (a deadline left
        # in the past would have the loop spin).
        if _gate_shut(m) and now >= m.gate_deadline:
            m = _shut_gate(m, now + p.interval)
        if m.lease_retry_deadline is not None and now >= m.lease_retry_deadline:
            m = replace(m, phase=replace(m.phase, retry_at=now + p.interval))
    if _gate_shut(m) and now >= m.gate_deadline and not m.paused:
        # The gate held the VIP back too: clients must not follow the ARP to a host whose
        # Milvus is not there while the old master still serves and stops its own.
        m, more, then = _open_gate(m, p)
        acts += more
        reason = (f"no other master appeared; {then}" if m.master is None
                  else f"previous master {m.master.address} went silent; {then}")
    if (isinstance(m.phase, Leasing) and m.phase.retry_at is not None
            and now >= m.phase.retry_at and not m.paused):
        m, more = _acquire(m, m.phase.holder)
        acts += more
    return Decision(m, tuple(acts), reason)


def _higher(a_prio: int, a_src: str, ours: int, our_addr: str) -> bool:
    """RFC 5798 6.4.3: higher priority wins; on a tie, the higher primary address."""
    if a_prio != ours:
        return a_prio > ours
    try:
        return ipaddress.ip_address(a_src) > ipaddress.ip_address(our_addr)
    except ValueError:
        return False


def _advert(m: Machine, p: Params, ev: AdvertReceived, now: float) -> Decision:
    a = ev.advert
    view = PeerView(address=a.src, priority=a.priority, interval=a.interval, last_seen=now)
    if m.state in (State.INIT, State.STOPPED):
        return Decision(m)
    if m.state == State.FAULT:
        return Decision(replace(m, master=view))
    eff = effective_priority(m, p)
    if m.state == State.BACKUP:
        known = m.master
        m = replace(m, master=view)
        if a.priority == 0:
            # RFC 5798 6.4.2: the master resigned; take over after the skew time only.
            skew = timing.skew_time(p.version, eff, m.master_adver_interval)
            return Decision(replace(m, master_down_deadline=now + skew))
        # keepalived's preempt_delay counts from start-up; havip also from the return out
        # of Fault, so a host whose Milvus keeps crashing does not keep snatching it back.
        in_delay = now < m.eligible_since + p.preempt_delay
        if not p.preempt or m.hold or a.priority >= eff or in_delay:
            if p.version == 3:
                m = replace(m, master_adver_interval=a.interval)   # RFC 5798 6.4.2: learn it
            return Decision(replace(m, master_down_deadline=now + master_down(m, p)))
        # Lower priority and we preempt: RFC 5798 6.4.2 discards it and lets the timer run
        # out. It becomes the master we report only if it is the one we followed (its
        # priority fell) or none is known: another router's low advert (a stranger on the
        # link) must not replace the real master in status and in the takeover reason.
        if known is not None and known.address != a.src and known.priority != 0:
            return Decision(replace(m, master=known))
        return Decision(m)
    # MASTER
    if a.priority == 0:
        # RFC 5798 6.4.3: answer a resignation at once so backups do not take over.
        m = replace(m, adver_deadline=now + p.interval)
        acts: list[Action] = [SendAdvert(eff)] if not m.leaving else []
        if _gate_shut(m) and m.master and m.master.address == a.src:
            m, more, then = _open_gate(replace(m, master=view), p)
            return Decision(m, (*acts, *more), f"{a.src} has stopped its milvus; {then}")
        return Decision(m, tuple(acts))
    if _higher(a.priority, a.src, eff, p.address):
        m = replace(m, master=view, master_adver_interval=a.interval if p.version == 3 else m.master_adver_interval)
        if m.leaving:
            return Decision(m)
        return _leave_master(m, p, now, State.BACKUP,
                             f"master {a.src} advertises priority {a.priority}, above ours {eff}; stepping down")
    # A lower master (on its way out, or about to yield to us): it gates our container.
    m = replace(m, master=view)
    if _gate_shut(m):
        m = _shut_gate(m, max(m.gate_deadline, now + _peer_down(m, p, a.interval)))
    return Decision(m)


def _link(m: Machine, p: Params, ev: LinkChanged, now: float) -> Decision:
    m = replace(m, link_up=ev.up)
    detail = f": {ev.detail}" if ev.detail else ""
    if not ev.up:
        if m.state == State.MASTER and m.leaving == State.STOPPED:
            return Decision(m)  # shutting down: the stop is in flight; _finish_leave skips priority 0
        if m.state in (State.MASTER, State.BACKUP):
            # A master without a link cannot advertise, so it cannot hand over, and the
            # backup takes over after master-down: kill Milvus now, no grace to wait for.
            return _enter_fault(m, p, now, f"interface {p.interface} went down{detail}", grace=False)
        return Decision(m)
    if m.state == State.FAULT and m.healthy is not False:
        return _enter_backup(m, p, now, f"interface {p.interface} is up again{detail}", listening_since=now)
    return Decision(m)


def _health(m: Machine, p: Params, ev: HealthChanged, now: float) -> Decision:
    if ev.role != check_role(m):
        return Decision(m)  # a verdict on checks that no longer apply
    m = replace(m, healthy=ev.healthy)
    if ev.fence and not ev.healthy and m.state == State.MASTER and not m.leaving:
        return _fence(m, p, now, ev.reason)      # the lease check failed on a running Milvus
    if m.paused:
        return Decision(m, (), f"paused: checks {'pass' if ev.healthy else 'fail'} ({ev.reason}), no action")
    if not ev.healthy:
        if m.state == State.MASTER and not m.leaving:
            # hold: a host whose Milvus just failed must not snatch it back by preemption
            # as soon as its standby checks pass (they cannot see why Milvus failed); a
            # crash-looping Milvus would bounce between the hosts. keepalived's recipe did
            # not fail back either (its check kept the priority down). The operator takes
            # it back with `havipctl failover`; a peer failure or a restart clears it too.
            return _leave_master(m, p, now, State.FAULT, f"milvus checks failed: {ev.reason}; giving up mastership",
                                 grace=False, hold=True)
        if m.state == State.BACKUP:
            return _enter_fault(m, p, now, f"cannot serve if promoted: {ev.reason}")
        return Decision(m)
    if m.state == State.FAULT and m.link_up:
        held = "; not preempting back: milvus failed here (`havipctl failover` takes over)" if m.hold else ""
        return _enter_backup(m, p, now, f"checks pass again: {ev.reason}{held}")
    return Decision(m)


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
        m = replace(m, release_op=release[0].op)
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
    if ev.ok and ev.op is not None and ev.op < m.released_at_op:
        # A ReleaseLease ran after this attempt on the ordered worker: the lease it took is
        # gone again. Only the answer to the pending attempt may start Milvus.
        return Decision(m, (), f"{stale or 'lease answer'}: void, the lease was given back after it")
    if ev.ok:
        # The lease is ours now (acquire is idempotent); an older attempt's yes does not start
        # Milvus, the pending one will say "already held".
        m = replace(m, lease_held=True)
        if wanted and not stale:
            m, start = _start(m)
            return Decision(m, tuple(start), f"{ev.reason}; starting milvus")
        if wanted:
            return Decision(m, (), f"{stale}; the lease is ours, the pending attempt will confirm it")
        if m.container in MAY_RUN:
            # Our Milvus may run on it (or its stop is pending; also the start-up guard over
            # a leftover): it goes back only after a confirmed stop.
            return Decision(m, (), f"{ev.reason}: kept while a milvus of ours may run here")
        m, release = _release(m, p)
        return Decision(m, tuple(release), f"{stale or 'lease granted'} after we stopped needing it: given back")
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


def _lease_lost(m: Machine, p: Params, ev: LeaseLost, now: float) -> Decision:
    # Fencing by time: even while Milvus starts (no check runs then, see check_role).
    if m.state != State.MASTER or m.leaving or m.container not in (Container.STARTING, Container.RUNNING):
        return Decision(m)
    return _fence(m, p, now, ev.reason)


def _lease_released(m: Machine, p: Params, ev: LeaseReleased, now: float) -> Decision:
    if m.release_op is None or (ev.op is not None and ev.op != m.release_op):
        return Decision(m)   # nobody waits for this one (a backup's release after its stop)
    m = replace(m, release_op=None)
    if m.leaving is None or m.container != Container.STOPPED:
        return Decision(m)
    reason = m.reason if ev.ok else f"{m.reason} ({ev.reason})"
    return _finish_leave(m, p, now, m.leaving, reason)


def _failover(m: Machine, p: Params, ev: FailoverRequested, now: float) -> Decision:
    if m.state == State.MASTER and not m.leaving:
        return _leave_master(m, p, now, State.BACKUP, "planned switchover requested by the operator",
                             hold=True, boost=False)
    if m.state == State.BACKUP:
        if m.healthy is False and not ev.force:
            return Decision(m, (), "refused takeover: this host cannot serve")
        return _enter_master(replace(m, hold=False, boost=True), p, now,
                             f"planned takeover requested by the operator; advertising priority {TAKEOVER_PRIORITY}")
    return Decision(m, (), f"refused failover: nothing to do in state {m.state}")


def _pause(m: Machine, p: Params, ev: PauseChanged, now: float) -> Decision:
    if ev.paused == m.paused:
        return Decision(m)
    m = replace(m, paused=ev.paused)
    if ev.paused:
        return Decision(m, (), "paused: no automatic transitions and no container actions")
    if m.healthy is False and m.state == State.MASTER and check_role(m) == "master":
        return _leave_master(m, p, now, State.FAULT, "resumed with failing milvus checks; giving up mastership",
                             grace=False, hold=True)
    if m.healthy is False and m.state == State.BACKUP:
        return _enter_fault(m, p, now, "resumed with failing checks: cannot serve if promoted")
    if m.state == State.BACKUP:
        m = replace(m, master_down_deadline=now + master_down(m, p))
    return Decision(m, (), "resumed: automatic transitions are on again")


def _shutdown(m: Machine, p: Params, ev: Shutdown, now: float) -> Decision:
    if m.state == State.STOPPED:
        return Decision(m)
    if m.leaving:
        return Decision(replace(m, leaving=State.STOPPED, reason="shutting down"))
    if m.state == State.MASTER:
        return _leave_master(m, p, now, State.STOPPED, "shutting down")
    m = replace(m, master_down_deadline=None)
    if p.supervise and m.container != Container.STOPPED:
        # Like a leaving master: wait for the stop (it retries), then stop and give the
        # lease back. Nothing else moves meanwhile (see step).
        m, stop = _stop(replace(m, leaving=State.STOPPED, reason="shutting down"))
        return Decision(m, (DelVip(), *stop), "shutting down; waiting for milvus to be confirmed stopped")
    return _finish_leave(m, p, now, State.STOPPED, "shutting down")


def _params_changed(m: Machine, p: Params, ev: ParamsChanged, now: float) -> Decision:
    """A reload: VRRPv2 never learns the master's interval, so it is ours (RFC 3768 6.1,
    both hosts must agree); v3 learns it from the next advert. Running timers follow."""
    if p.version == 2 or m.master is None:
        m = replace(m, master_adver_interval=p.interval)
    if m.state == State.BACKUP and m.master_down_deadline is not None:
        m = replace(m, master_down_deadline=now + master_down(m, p))
    if m.adver_deadline is not None:
        m = replace(m, adver_deadline=min(m.adver_deadline, now + p.interval))
    return Decision(m, (), f"reloaded: advert interval {p.interval:g}s, master-down {master_down(m, p):.2f}s")


_HANDLERS = {
    Startup: _startup, AdvertReceived: _advert, LinkChanged: _link, HealthChanged: _health,
    ContainerReady: _container_ready, ContainerStopped: _container_stopped, LeaseResult: _lease,
    LeaseLost: _lease_lost, LeaseReleased: _lease_released,
    FailoverRequested: _failover, PauseChanged: _pause, ParamsChanged: _params_changed, Shutdown: _shutdown,
}
_WHILE_STOPPING = (Tick, ContainerStopped, ContainerReady, LeaseResult, LeaseReleased, ParamsChanged)


def step(m: Machine, p: Params, event: Event, now: float) -> Decision:
    """Apply one event at monotonic time `now`; pure. Raises MachineError on a decision that
    would break the single-writer contract (a bug here, never an input)."""
    if isinstance(event, Tick):
        return _checked(m, p, event, _tick(m, p, now))
    if m.leaving == State.STOPPED and m.state != State.MASTER and not isinstance(event, _WHILE_STOPPING):
        # Shutting down with a stop pending: no takeover, no fault, no new stop; wait.
        return Decision(replace(m, link_up=event.up) if isinstance(event, LinkChanged) else m)
    return _checked(m, p, event, _HANDLERS[type(event)](m, p, event, now))


def next_deadline(m: Machine) -> float | None:
    """When the machine next needs a Tick."""
    ds = [d for d in (m.adver_deadline, m.master_down_deadline, m.garp_deadline,
                      m.gate_deadline, m.stop_retry_deadline, m.lease_retry_deadline) if d is not None]
    return min(ds) if ds else None
