"""The virtual addresses, added and removed over rtnetlink in the current namespace.

Every operation is idempotent: adding an address that is there (EEXIST) or removing one
that is not (EADDRNOTAVAIL) is not an error, and the return value lists only what
actually changed, so the daemon can log "added 198.18.0.50/24" exactly once.

Adding and removing is on the takeover path (between the first advert and the first
gratuitous ARP), so it is one send and one read: the requests are encoded ahead with
pyroute2's message classes, per interface index, and go out on one rtnetlink socket that
stays open. pyroute2's own `IPRoute.addr()` takes 0.3-0.6 ms per call and 2.5 ms on the
first (its request pipeline, and in 0.9 an asyncio loop); keepalived's C takes ~0.05 ms.
Listing (`present()`, off the takeover path) keeps `IPRoute`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, ifaddrmsg

from havip.errors import AdapterError
from havip.net.link import errno_text, if_index

Vip = ipaddress.IPv4Interface | ipaddress.IPv6Interface
ACK_TIMEOUT = 2.0       # the kernel answers an address request before send() returns
_HDR = struct.Struct("=IHHII")      # struct nlmsghdr: len, type, flags, seq, pid


def encode_request(command: str, index: int, vip: Vip) -> bytes:
    """RTM_NEWADDR ("add") or RTM_DELADDR ("del") for `vip` on interface `index`, asking for
    an ack, as `ip address add|del` and pyroute2's IPRoute.addr() send it: IFA_LOCAL and
    IFA_ADDRESS for IPv4, IFA_ADDRESS for IPv6; an IPv6 VIP is added without duplicate
    address detection (a tentative VIP cannot be used for a second or more, and the VRRP
    election already decided who owns it). Sequence number 0: `Rtnl.request` sets it."""
    vip = ipaddress.ip_interface(vip)
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    msg["prefixlen"] = vip.network.prefixlen
    msg["index"] = index
    msg["scope"] = 0
    msg["flags"] = IFA_F_NODAD if vip.version == 6 and command == "add" else 0
    addr = str(vip.ip)
    msg["attrs"] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)] if vip.version == 4 else [("IFA_ADDRESS", addr)]
    msg["header"]["type"] = RTM_NEWADDR if command == "add" else RTM_DELADDR
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if command == "add" else 0)
    msg["header"]["sequence_number"] = 0
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def ack_errno(data: bytes, seq: int) -> int | None:
    """The errno the kernel answered request `seq` with (0: done), or None if `data` holds no
    answer to it (an answer to an earlier request that timed out)."""
    off = 0
    while off + _HDR.size <= len(data):
        length, kind, _flags, got, _pid = _HDR.unpack_from(data, off)
        if length < _HDR.size:
            return None
        if kind == NLMSG_ERROR and got == seq and off + _HDR.size + 4 <= len(data):
            return -struct.unpack_from("=i", data, off + _HDR.size)[0]
        off += (length + 3) & ~3
    return None


class Rtnl:
    """One rtnetlink socket kept open: a request is pre-encoded bytes, answered by an ack."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self._sock.bind((0, 0))
            self._sock.settimeout(ACK_TIMEOUT)
        except OSError:
            self._sock.close()
            raise
        self._seq = 0

    def request(self, message: bytes) -> int:
        """Send one request and wait for its ack; returns the errno (0: done). Raises
        OSError if the socket fails or no ack comes within ACK_TIMEOUT."""
        self._seq = self._seq % 0x7FFFFFFF + 1
        buf = bytearray(message)
        struct.pack_into("=I", buf, 8, self._seq)
        self._sock.send(buf)
        while True:
            code = ack_errno(self._sock.recv(65536), self._seq)
            if code is not None:
                return code

    def close(self) -> None:
        self._sock.close()


class VipManager:
    """Adds, removes and lists the configured VIPs on one interface."""

    def __init__(self, ifname: str, vips: list[Vip]):
        self.ifname = ifname
        self.vips = [ipaddress.ip_interface(v) for v in vips]
        self._names = [str(v) for v in self.vips]
        self._encoded: dict[tuple[str, int], list[bytes]] = {}   # (command, index) -> one per VIP
        try:
            self._rtnl = Rtnl()
        except OSError as exc:
            raise AdapterError(f"cannot open a netlink socket to manage the VIPs on {ifname}: "
                               f"{errno_text(exc)}") from None
        try:
            self._ipr = IPRoute()
        except OSError as exc:
            self._rtnl.close()
            raise AdapterError(f"cannot open a netlink socket to manage the VIPs on {ifname}: "
                               f"{errno_text(exc)}") from None
        self.prepare()

    def prepare(self) -> None:
        """Encode the requests for the interface as it is now (none if it is missing), so
        that a takeover only sends them; a re-created interface's are encoded at first use."""
        index = if_index(self.ifname)
        if index is not None:
            for command in ("add", "del"):
                self._messages(command, index)

    def _messages(self, command: str, index: int) -> list[bytes]:
        msgs = self._encoded.get((command, index))
        if msgs is None:
            if len(self._encoded) > 64:         # interfaces re-created again and again
                self._encoded.clear()
            msgs = self._encoded[(command, index)] = [encode_request(command, index, v) for v in self.vips]
        return msgs

    def add(self) -> list[str]:
        """Add every VIP; returns those that were not there before ("ip/prefix")."""
        return self._apply("add", "added")

    def remove(self) -> list[str]:
        """Remove every VIP; returns those that were there."""
        return self._apply("del", "removed")

    def _apply(self, command: str, done: str) -> list[str]:
        """One RTM_NEWADDR/RTM_DELADDR per VIP. Tries every VIP before raising, and the error
        still says what changed: the caller must not believe the VIPs it did not get are
        held (or released). Adding one that is there, or removing one that is not, changes
        nothing and is no error."""
        action = "add" if command == "add" else "remove"
        # Looked up every time: a re-created interface has a new index.
        index = if_index(self.ifname)
        if index is None:
            raise AdapterError("; ".join(f"cannot {action} {name} on {self.ifname}: interface {self.ifname} "
                                         "does not exist" for name in self._names))
        unchanged = (errno.EEXIST,) if command == "add" else (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH)
        changed, errors = [], []
        for name, msg in zip(self._names, self._messages(command, index)):
            try:
                code = self._rtnl.request(msg)
            except OSError as exc:
                errors.append(f"cannot {action} {name} on {self.ifname}: {errno_text(exc)}")
                continue
            if code == 0:
                changed.append(name)
            elif code not in unchanged:
                errors.append(f"cannot {action} {name} on {self.ifname}: {os.strerror(code)}")
        if errors:
            raise AdapterError("; ".join(errors) + (f" ({done} {', '.join(changed)})" if changed else ""))
        return changed

    def present(self) -> list[str]:
        """The configured VIPs (address and prefix length) now on the interface."""
        index = if_index(self.ifname)
        if index is None:
            raise AdapterError(f"cannot list the VIPs on {self.ifname}: "
                               f"interface {self.ifname} does not exist")
        try:
            held = {
                (ipaddress.ip_address(m.get("address") or m.get("local")), m["prefixlen"])
                for fam in (socket.AF_INET, socket.AF_INET6)
                for m in self._ipr.addr("dump", index=index, family=fam)
            }
        except (NetlinkError, OSError) as exc:
            raise AdapterError(f"cannot list the VIPs on {self.ifname}: {errno_text(exc)}") from None
        return [str(v) for v in self.vips if (v.ip, v.network.prefixlen) in held]

    def close(self) -> None:
        self._rtnl.close()
        self._ipr.close()

    def __enter__(self) -> "VipManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
