"""Link state of the VRRP interface, from rtnetlink, in the current network namespace.

`LinkMonitor` hands the daemon a file descriptor to put in its select loop; `drain()`
says whether anything about our interface changed and `status()` reads the state
afresh, so a missed or coalesced notification can never leave a stale answer.

The notification socket is a plain AF_NETLINK socket whose messages pyroute2's
`MarshalRtnl` decodes. pyroute2 0.9's own `IPRoute.get()` runs an asyncio loop that
moves datagrams into a private queue: select() on its fd can then say "nothing to
read" while messages wait in that queue, and get() blocks when there are none.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELADDR, RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK,
    RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_DADFAILED, IFA_F_TENTATIVE
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from havip.errors import AdapterError

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
# RFC 2863 operstates as the kernel reports them (IF_OPER_*).
_OPER_OK = ("UP", "UNKNOWN")


@dataclass(frozen=True, slots=True)
class LinkStatus:
    exists: bool
    up: bool           # administratively up AND carrier/operstate up
    detail: str        # one sentence, e.g. "eth0 has no carrier"


def if_index(ifname: str) -> int | None:
    """The interface's index in the current namespace, or None if it does not exist."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def interface_addresses(ifname: str, family: int) -> list[tuple[str, int, int]]:
    """(address, prefixlen, scope) of usable addresses on `ifname`, kernel order
    (the primary address first). Tentative and DAD-failed addresses are skipped:
    the kernel refuses them as a source. Raises AdapterError if the interface is gone."""
    index = if_index(ifname)
    if index is None:
        raise AdapterError(f"interface {ifname} does not exist")
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        with IPRoute() as ipr:
            msgs = ipr.addr("dump", index=index, family=fam)
    except (NetlinkError, OSError) as exc:
        raise AdapterError(f"cannot list the addresses of {ifname}: {errno_text(exc)}") from None
    out = []
    for m in msgs:
        if (m.get("flags") or 0) & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            continue
        addr = m.get("address") or m.get("local")
        if addr:
            out.append((addr, m["prefixlen"], m["scope"]))
    return out


def errno_text(exc: BaseException) -> str:
    """The errno text of an OSError or a pyroute2 NetlinkError ("No such device")."""
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(exc) or type(exc).__name__


class LinkMonitor:
    """Watches one interface; never raises because the interface is missing."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self._index = if_index(ifname)
        self._marshal = MarshalRtnl()
        sock = None
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                 socket.NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise AdapterError(f"cannot watch {ifname} over netlink: {errno_text(exc)}") from None
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> bool:
        """Read every pending notification; True if one concerned our interface.

        A receive-buffer overflow (ENOBUFS) means notifications were lost, so it counts
        as a change: the caller re-reads status() either way."""
        changed = False
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return changed
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    changed = True
                    continue
                raise AdapterError(f"reading link notifications for {self.ifname} failed: "
                                   f"{errno_text(exc)}") from None
            for msg in self._marshal.parse(data):
                changed |= self._concerns_us(msg)

    def _concerns_us(self, msg) -> bool:
        kind = msg["header"]["type"]
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            named = msg.get_attr("IFLA_IFNAME") == self.ifname
            if not (named or (self._index is not None and msg["index"] == self._index)):
                return False
            # A re-created interface comes back with a new index; a renamed one is gone.
            self._index = msg["index"] if (kind == RTM_NEWLINK and named) else None
            return True
        if kind in (RTM_NEWADDR, RTM_DELADDR):
            return self._index is not None and msg["index"] == self._index
        return False

    def status(self) -> LinkStatus:
        """The interface's state read now from the kernel (not from notifications)."""
        name = self.ifname
        index = if_index(name)
        self._index = index
        if index is None:
            return LinkStatus(False, False, f"interface {name} does not exist")
        try:
            with IPRoute() as ipr:
                links = ipr.get_links(index)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return LinkStatus(False, False, f"interface {name} does not exist")
            return LinkStatus(True, False, f"cannot read the state of {name}: {errno_text(exc)}")
        except OSError as exc:
            return LinkStatus(True, False, f"cannot read the state of {name}: {errno_text(exc)}")
        if not links:
            return LinkStatus(False, False, f"interface {name} does not exist")
        link = links[0]
        flags = link["flags"]
        oper = link.get_attr("IFLA_OPERSTATE") or "UNKNOWN"
        if not flags & IFF_UP:
            return LinkStatus(True, False, f"{name} is administratively down")
        if not flags & IFF_LOWER_UP or link.get_attr("IFLA_CARRIER") == 0:
            return LinkStatus(True, False, f"{name} has no carrier")
        if oper not in _OPER_OK:
            return LinkStatus(True, False, f"{name} is operationally {oper.lower()}")
        return LinkStatus(True, True, f"{name} is up")

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "LinkMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
