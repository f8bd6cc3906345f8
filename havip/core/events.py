"""The machine's inputs from the wire, the link, the checks, the operator and the clock:
Startup, Tick, AdvertReceived, LinkChanged, HealthChanged, FailoverRequested, PauseChanged,
Shutdown, ParamsChanged (RFC 5798 section 6, RFC 3768 section 6). The workers' answers are
in havip.core.answers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from havip.core import lease as lease_phase
from havip.core.answers import _fence, _fence_leaving, graceful_stop_leaving
from havip.core.lifecycle import Container, Leasing, Running, Stopped, Stopping
from havip.core.state import (
    OWNER_PRIORITY, TAKEOVER_PRIORITY, Decision, Machine, Params, _peer_down, advertised_priority, check_role,
    effective_priority, master_down,
)
from havip.core.transitions import (
    _acquire, _enter_backup, _enter_fault, _enter_master, _finish_leave, _gate_shut, _kill_pending, _leave_master,
    _next_op,
    _open_gate, _shut_gate, _stop,
)
from havip.model import (
    AcquireLease, Action, AdvertReceived, DelVip, FailoverRequested, HealthChanged, LinkChanged, ParamsChanged,
    PauseChanged, PeerView, SendAdvert, SendGarp, Shutdown, Startup, State, StopContainer,
)
from havip.protocol import timing


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
        m = replace(m, lease=lease_phase.acquire(m.lease, op))
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
        acts.append(SendAdvert(advertised_priority(m, p)))
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
    eff = advertised_priority(m, p)
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
            # Shutting down: the stop is in flight and _finish_leave skips priority 0. The
            # backup no longer hears us and takes over after master-down: a graceful stop
            # in flight becomes a kill, as below.
            m, kill = _kill_pending(m)
            return Decision(m, tuple(kill), f"interface {p.interface} went down{detail} while shutting down; "
                                            "the graceful stop in flight becomes a kill" if kill else None)
        if m.state in (State.MASTER, State.BACKUP):
            # A master without a link cannot advertise, so it cannot hand over, and the
            # backup takes over after master-down: kill Milvus now, no grace to wait for.
            return _enter_fault(m, p, now, f"interface {p.interface} went down{detail}", grace=False)
        return Decision(m)
    if m.state == State.FAULT and m.healthy is not False:
        return _enter_backup(m, p, now, f"interface {p.interface} is up again{detail}", listening_since=now)
    return Decision(m)


def _health(m: Machine, p: Params, ev: HealthChanged, now: float) -> Decision:
    if ev.fence and not ev.healthy and ev.role == "master" and graceful_stop_leaving(m):
        # The lease check failed on the running Milvus just as the master began to step
        # down (the verdict crossed the role change): kill now, not after the grace.
        return _fence_leaving(m, ev.reason)
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
