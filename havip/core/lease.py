"""The storage lease as the state machine sees it: a typed phase with its data, beside the
container's phase (havip.core.lifecycle), and the only transitions that change it.

    Unheld --acquire--> Acquiring(op) --yes--> Held(op, since) --release--> Releasing(op)
      ^                     |  no                                              |
      +---------------------+------------------<-- LeaseReleased(op) ---------+

Every transition takes the container's phase and refuses (MachineError) what would let
two Milvus write the shared storage:

- the lease goes back (`release`) only when no Milvus of ours can run: never while the
  container is starting, running or stopping without a confirmed stop. So an acquire's
  second answer ("already held") cannot give back the lease of a running Milvus (issue
  10, hole 3): the release it would need raises.
- Milvus starts (`require_held`) only on a held lease.

`void_before` is the op of the last ReleaseLease: the ordered worker ran that release
after every acquire with a smaller op, so such an acquire's "yes" took a lease that is
gone again; it is void, never a reason to start Milvus. Every phase carries it, so no
transition can forget it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from havip.core.lifecycle import MAY_RUN, MachineError, Phase


class LeaseName(enum.StrEnum):
    UNHELD = "unheld"
    ACQUIRING = "acquiring"
    HELD = "held"
    RELEASING = "releasing"


@dataclass(frozen=True, slots=True)
class Unheld:
    """No lease of ours as far as the machine knows (never taken, refused, or given back)."""

    void_before: int = 0
    name: ClassVar[LeaseName] = LeaseName.UNHELD


@dataclass(frozen=True, slots=True)
class Acquiring:
    """An AcquireLease `op` is out and no attempt has said yes yet."""

    op: int
    void_before: int = 0
    name: ClassVar[LeaseName] = LeaseName.ACQUIRING


@dataclass(frozen=True, slots=True)
class Held:
    """An acquire (`op`) said yes at `since`, and no ReleaseLease since. `lease_id` names the
    backend's lease when it has one (etcd), so that news about an older one is told apart."""

    op: int | None
    since: float
    lease_id: int | None = None
    void_before: int = 0
    name: ClassVar[LeaseName] = LeaseName.HELD


@dataclass(frozen=True, slots=True)
class Releasing:
    """A ReleaseLease `op` is out; a leaving master waits for its answer before priority 0."""

    op: int
    name: ClassVar[LeaseName] = LeaseName.RELEASING

    @property
    def void_before(self) -> int:
        return self.op


LeasePhase = Unheld | Acquiring | Held | Releasing


def acquire(lease: LeasePhase, op: int) -> LeasePhase:
    """An AcquireLease `op` goes out. A held lease stays held (acquire is idempotent)."""
    if isinstance(lease, Held):
        return lease
    return Acquiring(op, lease.void_before)


def is_void(lease: LeasePhase, op: int | None) -> bool:
    """A yes to acquire `op` that a later ReleaseLease has undone (or is undoing)."""
    if op is None:
        return isinstance(lease, Releasing)      # a hand-built answer cannot outlive a release
    return op < lease.void_before


def granted(lease: LeasePhase, op: int | None, now: float, lease_id: int | None = None) -> LeasePhase:
    """An acquire said yes (not void: see is_void)."""
    if is_void(lease, op):
        raise MachineError(f"lease answer #{op} taken as a grant after the release #{lease.void_before}")
    if isinstance(lease, Held) and (lease_id is None or lease_id == lease.lease_id):
        return lease
    return Held(op, now, lease_id, lease.void_before)


def refused(lease: LeasePhase, op: int | None) -> LeasePhase:
    """An acquire said no: only the pending attempt's no means we hold nothing."""
    if isinstance(lease, Acquiring) and (op is None or op == lease.op):
        return Unheld(lease.void_before)
    return lease


def release(lease: LeasePhase, container: Phase, op: int) -> LeasePhase:
    """A ReleaseLease `op` goes out: only when no Milvus of ours can run."""
    if container.name in MAY_RUN:
        raise MachineError(f"lease given back ({lease.name}) while the container is {container.name}")
    return Releasing(op)


def released(lease: LeasePhase, op: int | None) -> LeasePhase | None:
    """LeaseReleased `op`: the new phase, or None when nobody waits for this answer."""
    if not isinstance(lease, Releasing) or (op is not None and op != lease.op):
        return None
    return Unheld(lease.op)


def require_held(lease: LeasePhase, what: str) -> None:
    """Milvus starts only on a lease that an acquire granted and nothing gave back."""
    if not isinstance(lease, Held):
        raise MachineError(f"{what} while the storage lease is {lease.name}")
