"""The machine's data: its parameters (Params), its state (Machine: the VRRP state, timers,
and the typed container and lease phases), its output (Decision), and the small derived
numbers every handler needs (effective priority, master-down, which checks apply).

Frozen dataclasses: a handler returns a new Machine, never edits one.
"""

from __future__ import annotations

from dataclasses import dataclass

from havip.core.lease import Held, LeasePhase, Releasing, Unheld
from havip.core.lifecycle import Container, Leasing, Phase, Starting, Stopped, Stopping, Waiting
from havip.model import Action, PeerView, State
from havip.protocol import timing

OWNER_PRIORITY = 255
TAKEOVER_PRIORITY = 254  # a planned takeover outranks every non-owner (RFC 5798 5.2.4)
STOP_RETRY = 1.0         # seconds between attempts to stop a container that would not stop
LEASE_RETRY = 0.25       # seconds between attempts to take a storage lease another host holds
LOST_KEPT = 4            # etcd lease ids reported lost that the machine remembers
YIELD_PRIORITY = 1       # a master in name only, without preemption: every master that serves outranks it


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
    lease: LeasePhase = Unheld()         # the storage lease, with the data of its phase
    # The last etcd lease ids a LeaseLost named: a grant of one of them (its loss overtook
    # the acquire's answer on the way to the loop) is no grant.
    lost_leases: tuple[int, ...] = ()
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

    # Read-only views of the lease's phase.
    @property
    def lease_held(self) -> bool:
        """An acquire said yes and no ReleaseLease since."""
        return isinstance(self.lease, Held)

    @property
    def released_at_op(self) -> int:
        """The op id of the last ReleaseLease: acquire answers before it are void."""
        return self.lease.void_before

    @property
    def release_op(self) -> int | None:
        """The ReleaseLease still out (a leaving master waits for it before priority 0)."""
        return self.lease.op if isinstance(self.lease, Releasing) else None


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


def advertised_priority(m: Machine, p: Params) -> int:
    """What a master advertises and defends against another master's advert.

    Without preemption, a master that does not hold the storage lease (it became master
    because it stopped hearing the one that holds it: a split brain, lost adverts, a frozen
    peer) advertises YIELD_PRIORITY until the lease is granted, so that when the two hear
    each other again the one that serves stays and this one steps down, whatever their
    priorities: the failback that `preempt: false` is there to avoid must not come from a
    heal. A planned takeover (boost) and an address owner keep their priority. Anything
    but a master: effective_priority (status and beacons report this one)."""
    eff = effective_priority(m, p)
    if (m.state == State.MASTER and p.lease and not p.preempt and not m.boost and eff != OWNER_PRIORITY
            and m.leaving is None and not m.lease_held):
        return YIELD_PRIORITY
    return eff


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

