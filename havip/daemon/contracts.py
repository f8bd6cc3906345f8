"""The contracts of the daemon's adapters: what `Adapters` holds, as typing.Protocols.

The real adapters (havip/net/*, havip/runtime/*, havip/checks/runner.py) and the fakes in
tests/fakes.py are checked against these same contracts (tests/unit/test_contracts.py):
a method renamed or a parameter added on one side only fails there, not in a lab run.
A second lease backend (etcd) implements `Lease` with the same semantics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from havip.checks.probes import CheckResult
from havip.net.link import LinkStatus
from havip.net.sock import Received


@runtime_checkable
class AdvertSocket(Protocol):
    """Sends and receives VRRP adverts on one interface (havip.net.sock.AdvertSocket)."""

    @property
    def source(self) -> str: ...

    @property
    def destinations(self) -> list[str]: ...

    def fileno(self) -> int: ...

    def send_to(self, payload: bytes, dst: str) -> None: ...

    def recv(self) -> Received | None: ...

    def close(self) -> None: ...


@runtime_checkable
class Vips(Protocol):
    """Attaches and removes the virtual addresses (havip.net.vip.VipManager); both return
    the addresses that actually changed."""

    def add(self) -> list[str]: ...

    def remove(self) -> list[str]: ...

    def prepare(self) -> None:
        """Encode the requests ahead (a takeover then only sends them); never required
        for correctness: a failure here is the takeover's to report."""

    def close(self) -> None: ...


@runtime_checkable
class Announcer(Protocol):
    """Gratuitous ARP / unsolicited NA (havip.net.garp.Announcer)."""

    def announce(self, vips: Iterable[Any]) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class Link(Protocol):
    """The interface's carrier, selectable (havip.net.link.LinkMonitor)."""

    def fileno(self) -> int: ...

    def drain(self) -> bool: ...

    def status(self) -> LinkStatus: ...


@runtime_checkable
class ContainerRuntime(Protocol):
    """The Milvus container (havip.runtime.container.ContainerRuntime). Every call has its
    own deadline and raises AdapterError; `stop` returns whether it was running."""

    def is_running(self) -> bool | None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float | None = None) -> bool: ...

    def wait_ready(self, probe: Any, timeout: float, poll: float = 0.1, cancel: Any = None) -> CheckResult: ...


@runtime_checkable
class Lease(Protocol):
    """The storage lease (havip.runtime.lease.StorageLease).

    acquire: take it without waiting, idempotent (a holder asking again gets ok);
    renew: prove it still holds, raise AdapterError if it cannot; release: give it back
    (only on the machine's ReleaseLease), also clearing a record this host left held;
    view: what this host last saw, without I/O; status: read the storage now.

    A backend whose lease has a TTL (etcd) also has `lease_id` (the lease held, or None)
    and an `on_lost(reason, lease_id)` callback that the executor wires to LeaseLost; the
    executor sends the id with each granted LeaseResult, so that the machine drops the
    loss of an older lease as stale. The file lease has neither (no id, no TTL)."""

    path: str

    @property
    def held(self) -> bool: ...

    def acquire(self) -> Any: ...

    def renew(self) -> None: ...

    def release(self) -> str | None: ...

    def view(self) -> dict: ...

    def status(self) -> dict: ...


@runtime_checkable
class Runner(Protocol):
    """The checks of the current role, off the loop (havip.checks.runner.CheckRunner)."""

    role: str

    def start(self) -> None: ...

    def stop(self, timeout: float | None = None) -> None: ...

    def set_role(self, role: str) -> None: ...

    def last_results(self) -> list[CheckResult]: ...
