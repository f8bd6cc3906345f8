"""The container's lifecycle as the state machine sees it: typed phases with their data,
and the preconditions every decision must keep, on the container and the lease
(havip.core.lease) together (checked by havip.core.machine.step).

A phase is replaced, never edited field by field: what a phase does not carry cannot be
left behind by a transition (a gate deadline on a running container, a stop retry after
the stop was confirmed). Only a confirmed stop leaves Stopping.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from havip.model import ContainerStopped, Event, ReleaseLease, SendAdvert, StartContainer, State


class MachineError(AssertionError):
    """A decision broke the single-writer contract: a bug in this module, never an input."""


class Container(enum.StrEnum):
    """The name of the container's phase (status, beacons, logs); the phase with its data
    is one of the dataclasses below, held in `Machine.phase`."""

    STOPPED = "stopped"
    WAITING = "waiting"      # master, but the previous master has not yet resigned
    LEASING = "leasing"      # master, taking the storage lease before the VIP and the container
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


MAY_RUN = (Container.STARTING, Container.RUNNING, Container.STOPPING)   # our Milvus may be up


@dataclass(frozen=True, slots=True)
class Stopped:
    """No container of ours runs: confirmed stopped, or never started."""

    name: ClassVar[Container] = Container.STOPPED


@dataclass(frozen=True, slots=True)
class Waiting:
    """Master, gate shut: the previous master has not resigned yet, or we settle."""

    gate_at: float
    name: ClassVar[Container] = Container.WAITING


@dataclass(frozen=True, slots=True)
class Leasing:
    """Master, taking the storage lease before the VIP and the container."""

    op: int | None                       # the pending AcquireLease; None while waiting to retry
    retry_at: float | None = None
    holder: str | None = None            # who held it at our last failed attempt
    name: ClassVar[Container] = Container.LEASING


@dataclass(frozen=True, slots=True)
class Starting:
    op: int                              # the pending StartContainer
    name: ClassVar[Container] = Container.STARTING


@dataclass(frozen=True, slots=True)
class Running:
    name: ClassVar[Container] = Container.RUNNING


@dataclass(frozen=True, slots=True)
class Stopping:
    """A stop is pending. On a master that is not leaving (a leftover found at start-up),
    `gate_at` is the shut gate, or `start_after` says it opened: start once stopped."""

    op: int                              # the pending StopContainer
    grace: bool = True                   # retries stop the same way
    retry_at: float | None = None
    gate_at: float | None = None
    start_after: bool = False
    name: ClassVar[Container] = Container.STOPPING


Phase = Stopped | Waiting | Leasing | Starting | Running | Stopping


def checked(before: Any, p: Any, event: Event, d: Any) -> Any:
    """The preconditions of the container and lease lifecycle, on every decision (a Machine
    before, the Params, the event and the Decision); raises MachineError, else returns d."""
    after = d.machine
    stop_confirmed = isinstance(event, ContainerStopped) and event.ok
    if before.container == Container.STOPPING and after.container != Container.STOPPING and not stop_confirmed:
        raise MachineError(f"{type(event).__name__}: {before.container} -> {after.container} "
                           "would abandon a pending stop")
    if after.container == Container.STOPPING and after.stop_op is None and p.supervise:
        raise MachineError(f"{type(event).__name__}: stopping with no stop pending")
    may_run = after.container in MAY_RUN or before.container in MAY_RUN and not stop_confirmed
    for a in d.actions:
        if isinstance(a, SendAdvert) and a.priority == 0 and may_run:
            raise MachineError(f"{type(event).__name__}: priority 0 while the container is {after.container}")
        if isinstance(a, ReleaseLease) and after.container in MAY_RUN:
            raise MachineError(f"{type(event).__name__}: lease given back while the container is {after.container}")
        if isinstance(a, StartContainer) and (before.container == Container.RUNNING
                                              or before.container == Container.STOPPING and not stop_confirmed):
            raise MachineError(f"{type(event).__name__}: start while the container is {before.container}")
        if isinstance(a, StartContainer) and p.lease and not after.lease_held:
            raise MachineError(f"{type(event).__name__}: start while the storage lease is {after.lease.name}")
        if isinstance(a, StartContainer) and after.lease_held and after.lease.lease_id in after.lost_leases:
            raise MachineError(f"{type(event).__name__}: start on etcd lease {after.lease.lease_id:x}, "
                               "already reported lost")
        if isinstance(a, ReleaseLease) and a.op is not None and after.lease.void_before < a.op:
            # Else a yes to an acquire queued before this release would count as a grant.
            raise MachineError(f"{type(event).__name__}: ReleaseLease #{a.op} not recorded in the lease's phase")
    if after.state == State.STOPPED and after.container in MAY_RUN:
        raise MachineError(f"{type(event).__name__}: stopped with the container {after.container}")
    return d
