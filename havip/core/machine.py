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

The modules: state.py (Params, Machine, Decision), lifecycle.py (the container's phases
and the checks on every decision), lease.py (the lease's phases and their transitions),
transitions.py (the only functions that change a phase or the VRRP state), events.py (the
wire, the link, the checks, the operator, the clock), answers.py (the workers' answers).
This module is the entry point: step() and next_deadline().
"""

from __future__ import annotations

from dataclasses import replace

from havip.core.answers import _container_ready, _container_stopped, _lease, _lease_lost, _lease_released
from havip.core.events import (
    _advert, _failover, _health, _link, _params_changed, _pause, _shutdown, _startup, _tick,
)
from havip.core.lease import Acquiring, Held, LeaseName, LeasePhase, Releasing, Unheld  # noqa: F401 - re-exported
from havip.core.lifecycle import (  # noqa: F401 - re-exported: the machine's public names
    MAY_RUN, Container, Leasing, MachineError, Phase, Running, Starting, Stopped, Stopping, Waiting,
    checked as _checked,
)
from havip.core.state import (  # noqa: F401 - re-exported
    LEASE_RETRY, OWNER_PRIORITY, STOP_RETRY, TAKEOVER_PRIORITY, YIELD_PRIORITY, Decision, Machine, Params,
    advertised_priority, check_role, effective_priority, master_down,
)
from havip.model import (
    AdvertReceived, ContainerReady, ContainerStopped, Event, FailoverRequested, HealthChanged, LeaseLost,
    LeaseReleased, LeaseResult, LinkChanged, ParamsChanged, PauseChanged, Shutdown, Startup, State, Tick,
)


__all__ = [  # the machine's public names, wherever they live
    "step", "next_deadline",
    "Acquiring", "Held", "LeaseName", "LeasePhase", "Releasing", "Unheld",
    "MAY_RUN", "Container", "Leasing", "MachineError", "Phase", "Running", "Starting", "Stopped",
    "Stopping", "Waiting",
    "LEASE_RETRY", "OWNER_PRIORITY", "STOP_RETRY", "TAKEOVER_PRIORITY", "YIELD_PRIORITY", "Decision", "Machine",
    "Params", "advertised_priority", "check_role", "effective_priority", "master_down",
]

_HANDLERS = {
    Startup: _startup, AdvertReceived: _advert, LinkChanged: _link, HealthChanged: _health,
    ContainerReady: _container_ready, ContainerStopped: _container_stopped, LeaseResult: _lease,
    LeaseLost: _lease_lost, LeaseReleased: _lease_released,
    FailoverRequested: _failover, PauseChanged: _pause, ParamsChanged: _params_changed, Shutdown: _shutdown,
}
_WHILE_STOPPING = (Tick, ContainerStopped, ContainerReady, LeaseResult, LeaseReleased, LeaseLost, ParamsChanged)


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
