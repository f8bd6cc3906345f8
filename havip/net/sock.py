"""The raw VRRP socket (IP protocol 112) on one interface, multicast or unicast.

The payload handed to `send()` is the complete VRRP message, checksum included; the
kernel builds the IP header. The source address is fixed per packet with an
IP_PKTINFO / IPV6_PKTINFO control message rather than bind(): a raw socket bound to
an address only receives packets sent *to* that address, which would hide the
multicast group. TTL / hop limit is 255 for both multicast and unicast, as RFC 3768
5.2.3 / RFC 5798 5.1.1.3 require and receivers check.

`recv()` never raises on a malformed packet: it returns what it got and leaves the
verdict (and the drop counter) to the protocol codec. It also returns when the kernel
received the packet (SO_TIMESTAMPNS): a backup's master-down timer runs from the advert's
arrival (RFC 5798 6.4.2), not from when a busy loop got round to reading it.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
from dataclasses import dataclass

from havip.errors import AdapterError
from havip.net.link import errno_text, if_index, interface_addresses

IPPROTO_VRRP = 112
GROUP4 = "224.0.0.18"   # RFC 3768 5.2.2
GROUP6 = "ff02::12"     # RFC 5798 5.1.2.2
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)   # <linux/in.h>; Python < 3.12 lacks it
_ANY4 = b"\0\0\0\0"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)   # <asm-generic/socket.h>
_STAMP = socket.CMSG_SPACE(16)                          # struct timespec
_ANC6 = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4) + _STAMP   # in6_pktinfo + hop limit + stamp


@dataclass(frozen=True, slots=True)
class Received:
    """One packet as it came off the wire; `payload` is the VRRP message only."""

    payload: bytes
    src: str
    dst: str
    ttl: int | None        # IPv4 TTL or IPv6 hop limit; None when unknown
    stamp: float | None = None   # when the kernel received it (CLOCK_REALTIME seconds); None when unknown


class AdvertSocket:
    """Sends and receives VRRP adverts on `ifname` (non-blocking; select on fileno())."""

    def __init__(self, ifname: str, family: int, *, unicast_peers: list[str] | None = None,
                 unicast_source: str | None = None):
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        self.ifname = ifname
        self.family = family
        self.unicast = bool(unicast_peers)
        self._peers = [str(p) for p in unicast_peers or []]
        self._fixed_source = str(unicast_source) if unicast_source else None
        self._source = ""
        self._anc4_key: tuple[int, str] | None = None
        self._anc4_cached: list = []
        self._ifindex: int | None = None
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        try:
            self._sock = socket.socket(af, socket.SOCK_RAW, IPPROTO_VRRP)
        except OSError as exc:
            raise AdapterError(f"cannot open a raw VRRP socket for {ifname}: {errno_text(exc)}") from None
        try:
            self._sock.setblocking(False)
            self._setup_header()
            self.refresh_source()
        except OSError as exc:
            self._sock.close()
            raise AdapterError(f"cannot set up the raw VRRP socket on {ifname}: {errno_text(exc)}") from None
        except BaseException:
            self._sock.close()
            raise

    # ------------------------------------------------------------------ setup

    def _setup_header(self) -> None:
        s = self._sock
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # Class "network control" (0xc0), as keepalived marks its adverts, so QoS
        # policies written for keepalived treat havip's the same.
        if self.family == 4:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xC0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0xC0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)

    def _bind_interface(self, index: int) -> None:
        """Bind to the device and join the group on it (again, if it was re-created)."""
        s = self._sock
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
        if self.family == 4:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("4s4si", _ANY4, _ANY4, index))
            if not self.unicast:
                mreqn = struct.pack("4s4si", socket.inet_aton(GROUP4), _ANY4, index)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            if not self.unicast:
                mreq = struct.pack("16si", socket.inet_pton(socket.AF_INET6, GROUP6), index)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)

    def refresh_source(self) -> str:
        """Re-read the interface: its index (re-binding if it was re-created) and the
        source address. Returns the source ("" when the interface has none yet)."""
        index = if_index(self.ifname)
        if index is None:
            raise AdapterError(f"cannot use {self.ifname} for VRRP: interface {self.ifname} does not exist")
        if index != self._ifindex:
            try:
                self._bind_interface(index)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:    # already a member: nothing to do
                    raise AdapterError(f"cannot bind the VRRP socket to {self.ifname}: "
                                       f"{errno_text(exc)}") from None
            self._ifindex = index
        if self._fixed_source:
            self._source = self._fixed_source
        else:
            self._source = self._interface_source()
        return self._source

    def _interface_source(self) -> str:
        addrs = interface_addresses(self.ifname, self.family)
        if self.family == 4:
            return addrs[0][0] if addrs else ""
        return next((a for a, _, _ in addrs if a.lower().startswith("fe80:")), "")

    # ------------------------------------------------------------------ API

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def source(self) -> str:
        return self._source

    @property
    def destinations(self) -> list[str]:
        if self.unicast:
            return list(self._peers)
        return [GROUP4 if self.family == 4 else GROUP6]

    def send(self, payload: bytes) -> None:
        """Send `payload` to every destination; AdapterError names each failure."""
        failed, sent = [], []
        for dst in self.destinations:
            try:
                self._send_one(payload, dst)
                sent.append(dst)
            except OSError as exc:
                failed.append(f"to {dst} failed: {errno_text(exc)}")
        if failed:
            also = f" (sent to {', '.join(sent)})" if sent else ""
            raise AdapterError(f"{self._what()} {'; '.join(failed)}{also}")

    def send_to(self, payload: bytes, dst: str) -> None:
        """Send `payload` to one destination. VRRPv3's checksum covers the destination
        address (RFC 5798 5.2.8), so unicast peers each get their own payload."""
        try:
            self._send_one(payload, dst)
        except OSError as exc:
            raise AdapterError(f"{self._what()} to {dst} failed: {errno_text(exc)}") from None

    def _what(self) -> str:
        return f"sending a VRRP advert on {self.ifname} from {self._source or '(no address)'}"

    def _send_one(self, payload: bytes, dst: str) -> None:
        index = self._ifindex or 0
        if self.family == 4:
            self._sock.sendmsg([payload], self._anc4(index), 0, (dst, 0))
        else:
            src = socket.inet_pton(socket.AF_INET6, self._source) if self._source else bytes(16)
            info = struct.pack("16sI", src, index)
            self._sock.sendmsg([payload], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0,
                               (dst, 0, 0, index))

    def _anc4(self, index: int) -> list:
        """IP_PKTINFO for the source address, built once per (index, source)."""
        key = (index, self._source)
        if self._anc4_key != key:
            info = struct.pack("i4s4s", index, socket.inet_aton(self._source), _ANY4) if self._source else None
            self._anc4_cached = [(socket.IPPROTO_IP, IP_PKTINFO, info)] if info else []
            self._anc4_key = key
        return self._anc4_cached

    def recv(self) -> Received | None:
        """The next packet, or None when there is none waiting."""
        try:
            data, anc, _flags, addr = self._sock.recvmsg(65535, _STAMP if self.family == 4 else _ANC6)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise AdapterError(f"receiving on the VRRP socket of {self.ifname} failed: {errno_text(exc)}") from None
        dst, hops, stamp = "", None, None
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                sec, nsec = struct.unpack("qq", value[:16])
                stamp = sec + nsec / 1e9
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == socket.IPV6_PKTINFO and len(value) >= 16:
                dst = socket.inet_ntop(socket.AF_INET6, value[:16])
            elif kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                hops = struct.unpack("i", value[:4])[0]
        if self.family == 4:
            return _strip_ipv4(data, addr[0], stamp)
        return Received(payload=data, src=addr[0].split("%")[0], dst=dst, ttl=hops, stamp=stamp)

    def wait(self, timeout: float) -> Received | None:
        """recv(), waiting up to `timeout` seconds (for tools and tests; the daemon selects)."""
        if select.select([self._sock], [], [], timeout)[0]:
            return self.recv()
        return None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "AdvertSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _strip_ipv4(data: bytes, src: str, stamp: float | None = None) -> Received:
    """Split what an IPv4 raw socket returns into header fields and the VRRP payload."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return Received(payload=b"", src=src, dst="", ttl=None, stamp=stamp)
    ihl = (data[0] & 0x0F) * 4
    total = struct.unpack_from("!H", data, 2)[0]
    end = total if ihl <= total <= len(data) else len(data)
    ttl = data[8]
    dst = socket.inet_ntoa(data[16:20])
    src = socket.inet_ntoa(data[12:16])
    payload = data[ihl:end] if ihl >= 20 else b""
    return Received(payload=payload, src=src, dst=dst, ttl=ttl, stamp=stamp)
