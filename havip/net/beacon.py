"""Peer beacon socket: havip hosts tell each other their state, health and pause.

VRRP backups are silent, so without this a master cannot know whether anyone could take
over, and an operator on one host cannot see that another is paused. The beacon is a
small signed datagram (havip.protocol.beacon) on UDP port 11259 to the VRRP group
(224.0.0.18 / ff02::12, link-local, sent with TTL / hop limit 255 like VRRP so that the
receiver can tell an on-link sender) or to the unicast peers. It informs `havipctl
status` and the switchover refusal; it never drives an election, so keepalived peers
(which do not send it) interoperate as before. Which datagrams are believed is decided
in havip.daemon.peers; this module only moves bytes.

Two sockets: one bound to port 11259 on the interface receives (and joins the group);
one bound to this host's VRRP source address sends, so the source a receiver sees is
the `from` the beacon claims.
"""

from __future__ import annotations

import socket
import struct

from havip.errors import AdapterError
from havip.net.link import errno_text, if_index
from havip.protocol.beacon import MAX_BYTES

PORT = 11259
GROUP4, GROUP6 = "224.0.0.18", "ff02::12"
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)      # Linux value; Python names it from 3.13 only


class Beacon:
    """Non-blocking UDP sockets on `ifname`: send(data), recv() -> (data, src, ttl) | None."""

    def __init__(self, ifname: str, family: int, *, source: str = "", peers: list[str] | None = None):
        self.ifname = ifname
        self.family = family
        self.peers = list(peers or [])
        self.source = source
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        self._sock = socket.socket(af, socket.SOCK_DGRAM)
        self._out = socket.socket(af, socket.SOCK_DGRAM)
        try:
            self._index = if_index(ifname) or 0
            self._setup_recv(af)
            self._setup_send(af)
        except OSError as exc:
            self.close()
            raise AdapterError(f"cannot open the peer beacon on {ifname}: {errno_text(exc)}") from None

    def _setup_recv(self, af: int) -> None:
        s, index = self._sock, self._index
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
        if af == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            s.bind(("", PORT))
            if not self.peers:
                mreqn = struct.pack("4s4si", socket.inet_aton(GROUP4), bytes(4), index)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            s.bind(("", PORT))
            if not self.peers:
                mreq = struct.pack("16si", socket.inet_pton(socket.AF_INET6, GROUP6), index)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)

    def _setup_send(self, af: int) -> None:
        s, index = self._out, self._index
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
        if af == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("4s4si", bytes(4), bytes(4), index))
            if self.source:
                s.bind((self.source, 0))
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            if self.source:
                s.bind((self.source, 0, 0, index))

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, data: bytes) -> None:
        dests = self.peers or [GROUP4 if self.family == 4 else GROUP6]
        for dst in dests:
            addr = (dst, PORT) if self.family == 4 else (dst, PORT, 0, self._index)
            try:
                self._out.sendto(data, addr)
            except OSError as exc:
                raise AdapterError(f"sending the peer beacon to {dst} on {self.ifname} failed: "
                                   f"{errno_text(exc)}") from None

    def recv(self) -> tuple[bytes, str, int | None] | None:
        """The next datagram as (bytes, source address, TTL or hop limit), None when
        nothing is waiting. A datagram longer than a beacon is cut (and then refused)."""
        try:
            data, anc, _flags, addr = self._sock.recvmsg(MAX_BYTES + 1, socket.CMSG_SPACE(4))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return None
        ttl = None
        for level, kind, value in anc:
            if (level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL), (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)):
                ttl = struct.unpack("i", value[:4])[0] if len(value) >= 4 else None
        return data, str(addr[0]).split("%")[0], ttl

    def close(self) -> None:
        self._sock.close()
        self._out.close()


def load_keyring(beacon_cfg):
    """The Keyring for `beacon` (havip.config.schema.Beacon), or None when no key is
    configured. A key file holds one key per line (blank lines and `#` comments are
    skipped); it is read at start and on reload. Raises AdapterError, naming the file."""
    from havip.protocol.beacon import Keyring

    if beacon_cfg.keys:
        return Keyring([k.encode() for k in beacon_cfg.keys])
    if beacon_cfg.key_file is None:
        return None
    path = beacon_cfg.key_file
    try:
        with open(path, "rb") as f:
            raw = f.read(64 * 1024 + 1)
    except OSError as exc:
        raise AdapterError(f"beacon.key_file: {path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > 64 * 1024:
        raise AdapterError(f"beacon.key_file: {path}: larger than 64 KiB; expected a few keys, one per line")
    keys = [line.strip() for line in raw.splitlines()]
    keys = [k for k in keys if k and not k.startswith(b"#")]
    try:
        return Keyring(keys)
    except ValueError as exc:
        raise AdapterError(f"beacon.key_file: {path}: {exc}") from None


def key_file_warning(beacon_cfg) -> str | None:
    """A warning when the key file can be read by others than its owner and group."""
    import os

    if beacon_cfg.key_file is None:
        return None
    try:
        mode = os.stat(beacon_cfg.key_file).st_mode
    except OSError:
        return None
    if mode & 0o004:
        return f"beacon.key_file: {beacon_cfg.key_file}: readable by every user; chmod 0600 (or 0640)"
    return None
