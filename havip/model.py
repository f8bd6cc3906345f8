"""Data shared by the protocol, the state machine and the daemon: no I/O here.

Adverts come in, events drive the state machine, actions come out. Everything is an
immutable dataclass so that the state machine stays a pure function.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class State(enum.StrEnum):
    INIT = "init"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"
    STOPPED = "stopped"


class DropReason(enum.StrEnum):
    """Why a received packet was discarded; each reason has its own counter."""

    TRUNCATED = "truncated"            # shorter than its header or its address list says
    BAD_TTL = "bad_ttl"                # IPv4 TTL / IPv6 hop limit not 255 (RFC 5798 7.1)
    BAD_VERSION = "bad_version"        # not the configured VRRP version
    BAD_TYPE = "bad_type"              # type is not 1 (ADVERTISEMENT)
    BAD_CHECKSUM = "bad_checksum"
    OTHER_VRID = "other_vrid"          # another virtual router on the same link
    BAD_ADDR_COUNT = "bad_addr_count"  # count field disagrees with the length
    AUTH_MISMATCH = "auth_mismatch"    # v2 authentication type or password differs
    INTERVAL_MISMATCH = "interval_mismatch"  # v2: advert interval differs (RFC 3768 7.1)
    ADDRESS_MISMATCH = "address_mismatch"    # VIP list differs (accepted by RFC; counted)
    NOT_A_PEER = "not_a_peer"          # unicast mode: source is not a configured peer
    OWN_ADVERT = "own_advert"          # our own packet looped back
    BAD_FAMILY = "bad_family"          # IPv4 advert on an IPv6 instance or the reverse
    BAD_INTERVAL = "bad_interval"      # advert interval 0: a v3 backup would learn it (RFC 5798 6.4.2)
    MALFORMED = "malformed"            # the decoder failed on it (a bug: logged, the packet dropped)
    INTERNAL_ERROR = "internal_error"  # checking or acting on it raised (a bug: logged, the loop goes on)


@dataclass(frozen=True, slots=True)
class Advert:
    """A decoded VRRP advertisement (v2 or v3), independent of the wire encoding."""

    version: int
    vrid: int
    priority: int
    interval: float                    # seconds (v2: whole seconds; v3: centisecond steps)
    addresses: tuple[str, ...]
    src: str = ""                      # sender's IP address ("" when unknown)
    ttl: int | None = None             # IPv4 TTL or IPv6 hop limit, when known
    auth_type: int = 0                 # v2 only: 0 none, 1 simple password
    password: bytes = b""              # v2 only, without padding


@dataclass(frozen=True, slots=True)
class Drop:
    """A received packet that was discarded, with the reason and a human detail."""

    reason: DropReason
    detail: str = ""
    src: str = ""


# ---------------------------------------------------------------- events (inputs)


@dataclass(frozen=True, slots=True)
class Startup:
    """The daemon starts; interface_up says whether the link can carry adverts."""

    interface_up: bool = True


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; the machine fires whichever deadlines are due at `now`."""


@dataclass(frozen=True, slots=True)
class AdvertReceived:
    advert: Advert


@dataclass(frozen=True, slots=True)
class LinkChanged:
    up: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """The aggregate of the Milvus checks changed (after rise/fall hysteresis).

    `role` is the check set that produced it ("master": the running Milvus; "backup":
    could this host serve). A result for a role the machine is no longer in is stale.
    """

    healthy: bool
    reason: str
    role: str = "backup"
    fence: bool = False     # the master's storage lease is lost or unprovable: act at once, even paused


# The id of the operation an answer answers (the `op` of the action that asked for it).
# None only for answers built by hand (tests): they answer whatever is pending. It takes
# no part in equality, so `StopContainer() in actions` still reads as "a stop was asked".
def _op():
    return field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ContainerReady:
    """The container started and Milvus answered healthy (or failed to in time)."""

    ok: bool
    reason: str
    op: int | None = _op()


@dataclass(frozen=True, slots=True)
class ContainerStopped:
    """The local container is confirmed stopped (ok) or could not be stopped."""

    ok: bool
    reason: str
    op: int | None = _op()


@dataclass(frozen=True, slots=True)
class LeaseResult:
    """An attempt to take the storage lease ended: ok, or who holds it (havip.runtime.lease)."""

    ok: bool
    reason: str
    holder: str | None = None
    op: int | None = _op()
    lease_id: int | None = _op()    # the backend's lease, when it has ids (etcd): see LeaseLost


@dataclass(frozen=True, slots=True)
class LeaseReleased:
    """A ReleaseLease ended: ok, or the storage did not answer within its bound (the lease
    then goes when the storage answers or drops our lock)."""

    ok: bool
    reason: str
    op: int | None = _op()


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """The lease we hold can no longer be proven (havip.runtime.etcdlease: no keep-alive
    answered in time): fence before it can expire. `lease_id` names the etcd lease it is
    about: the loss of an older one than the machine holds is stale."""

    reason: str
    lease_id: int | None = None


@dataclass(frozen=True, slots=True)
class FailoverRequested:
    """Planned switchover: on the master, hand over; on a backup, take over."""

    force: bool = False


@dataclass(frozen=True, slots=True)
class PauseChanged:
    paused: bool


@dataclass(frozen=True, slots=True)
class ParamsChanged:
    """The configuration was reloaded (SIGHUP): timers follow the new intervals."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """SIGTERM/SIGINT: leave cleanly (priority-0 advert, VIP removed, container stopped)."""


Event = (
    Startup | Tick | AdvertReceived | LinkChanged | HealthChanged | ContainerReady | ContainerStopped
    | LeaseResult | LeaseLost | LeaseReleased | FailoverRequested | PauseChanged | ParamsChanged | Shutdown
)


# ---------------------------------------------------------------- actions (outputs)


@dataclass(frozen=True, slots=True)
class SendAdvert:
    priority: int


@dataclass(frozen=True, slots=True)
class AddVip:
    pass


@dataclass(frozen=True, slots=True)
class DelVip:
    pass


@dataclass(frozen=True, slots=True)
class SendGarp:
    pass


@dataclass(frozen=True, slots=True)
class StartContainer:
    op: int | None = _op()


@dataclass(frozen=True, slots=True)
class StopContainer:
    """Stop the container and confirm it. grace=False kills at once: used when the link is
    gone, where no client connection can close and the peer is already counting down."""

    grace: bool = True
    op: int | None = _op()


@dataclass(frozen=True, slots=True)
class AcquireLease:
    """Try (once, without waiting) to take the storage lease; the answer is a LeaseResult."""

    op: int | None = _op()


@dataclass(frozen=True, slots=True)
class ReleaseLease:
    """Give the storage lease back. Only the machine asks for it, and only when no Milvus
    of ours can run (a confirmed stop, or a lease granted after we left). The answer is a
    LeaseReleased; a leaving master resigns only after it, so the peer finds the lease free."""

    op: int | None = _op()


@dataclass(frozen=True, slots=True)
class Notify:
    """Run the operator's hook script for the new state (keepalived's notify_*)."""

    state: State
    priority: int


Action = (SendAdvert | AddVip | DelVip | SendGarp | StartContainer | StopContainer | AcquireLease | ReleaseLease
          | Notify)


@dataclass(frozen=True, slots=True)
class PeerView:
    """The current master as seen on the wire."""

    address: str
    priority: int
    interval: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of state, with the sentence that explains it."""

    old: State
    new: State
    reason: str
    at: float
    extra: dict = field(default_factory=dict)
