"""Peer beacon: havip hosts tell each other their state, health and pause, once a second.

VRRP backups are silent, so without this a master cannot know whether anyone could take
over, and an operator on one host cannot see that another is paused. The beacon is a
small JSON datagram on UDP port 11259 to the VRRP group (224.0.0.18 / ff02::12, link-local,
TTL 1) or to the unicast peers. It only informs status and the switchover refusal; it
never drives an election, so keepalived peers (which do not send it) interoperate as
before, and a forged beacon can at worst make `havipctl failover` proceed without --force.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass

from havip.errors import AdapterError
from havip.net.link import errno_text, if_index

PORT = 11259
GROUP4, GROUP6 = "224.0.0.18", "ff02::12"
MAX_BYTES = 1024
FIELDS = {"instance": str, "vrid": int, "state": str, "priority": int, "healthy": (bool, type(None)),
          "paused": bool, "container": (str, type(None))}


@dataclass(frozen=True, slots=True)
class PeerState:
    src: str
    instance: str
    vrid: int
    state: str
    priority: int
    healthy: bool | None
    paused: bool
    container: str | None


def encode(info: dict) -> bytes:
    return json.dumps({"havip": 1, **info}, separators=(",", ":")).encode()


def decode(data: bytes, src: str) -> PeerState | None:
    """A peer's beacon, or None for anything that is not one (never raises)."""
    if len(data) > MAX_BYTES:
        return None
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(msg, dict) or msg.get("havip") != 1:
        return None
    for key, kind in FIELDS.items():
        if not isinstance(msg.get(key), kind) or isinstance(msg.get(key), bool) and kind is int:
            return None
    return PeerState(src=src, **{k: msg[k] for k in FIELDS})


class Beacon:
    """Non-blocking UDP socket on `ifname`: send_all(info), recv() -> PeerState | None."""

    def __init__(self, ifname: str, family: int, *, peers: list[str] | None = None):
        self.ifname = ifname
        self.family = family
        self.peers = list(peers or [])
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        self._sock = socket.socket(af, socket.SOCK_DGRAM)
        try:
            self._setup(af)
        except OSError as exc:
            self._sock.close()
            raise AdapterError(f"cannot open the peer beacon on {ifname}: {errno_text(exc)}") from None

    def _setup(self, af: int) -> None:
        s = self._sock
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
        index = if_index(self.ifname) or 0
        if af == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("4s4si", bytes(4), bytes(4), index))
            s.bind(("", PORT))
            if not self.peers:
                mreqn = struct.pack("4s4si", socket.inet_aton(GROUP4), bytes(4), index)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            s.bind(("", PORT))
            if not self.peers:
                mreq = struct.pack("16si", socket.inet_pton(socket.AF_INET6, GROUP6), index)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        self._index = index

    def fileno(self) -> int:
        return self._sock.fileno()

    def send_all(self, info: dict) -> None:
        data = encode(info)
        dests = self.peers or [GROUP4 if self.family == 4 else GROUP6]
        for dst in dests:
            addr = (dst, PORT) if self.family == 4 else (dst, PORT, 0, self._index)
            try:
                self._sock.sendto(data, addr)
            except OSError as exc:
                raise AdapterError(f"sending the peer beacon to {dst} on {self.ifname} failed: "
                                   f"{errno_text(exc)}") from None

    def recv(self) -> PeerState | None | bool:
        """The next beacon; None if a datagram was not one; False when nothing is waiting."""
        try:
            data, addr = self._sock.recvfrom(MAX_BYTES + 1)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False
        return decode(data, addr[0].split("%")[0])

    def close(self) -> None:
        self._sock.close()
