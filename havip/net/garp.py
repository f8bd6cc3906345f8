"""Gratuitous ARP and unsolicited Neighbor Advertisements for the VIPs.

After a takeover the neighbours still map the VIP to the old master's MAC; these
frames make them switch at once instead of after their cache times out.

Frames are built with scapy (once per VIP and MAC, then cached) but sent through one
AF_PACKET socket that stays open: scapy's `sendp()` opens and closes a socket per call,
which costs milliseconds on the takeover path.
"""

from __future__ import annotations

import ipaddress
import socket

from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from havip.errors import AdapterError
from havip.net.link import errno_text, if_index

BROADCAST = "ff:ff:ff:ff:ff:ff"
ALL_NODES = "ff02::1"
ALL_NODES_MAC = "33:33:00:00:00:01"   # RFC 2464 7: 33:33 + low 32 bits of ff02::1


def garp_frame(mac: str, vip: str) -> bytes:
    """An ARP request with sender = target = VIP, broadcast (RFC 5227 3 "ARP
    Announcement"). The target MAC is all-ones, byte for byte what keepalived sends;
    receivers ignore it."""
    return bytes(Ether(src=mac, dst=BROADCAST)
                 / ARP(op=1, hwsrc=mac, psrc=vip, hwdst=BROADCAST, pdst=vip))


def unsolicited_na_frame(mac: str, vip: str) -> bytes:
    """An unsolicited Neighbor Advertisement to all nodes with the Override flag and the
    target link-layer address option (RFC 4861 7.2.6), from the VIP itself as keepalived
    does. Hop limit 255 or receivers drop it (RFC 4861 7.1.2). Router flag clear: the
    hosts that carry a VIP are not routers."""
    return bytes(Ether(src=mac, dst=ALL_NODES_MAC)
                 / IPv6(src=vip, dst=ALL_NODES, hlim=255)
                 / ICMPv6ND_NA(tgt=vip, R=0, S=0, O=1)
                 / ICMPv6NDOptDstLLAddr(lladdr=mac))


class Announcer:
    """Announces VIPs on one interface through a single long-lived AF_PACKET socket."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self._sock: socket.socket | None = None
        self._cache: dict[tuple[str, str], bytes] = {}
        # The frames of the last announcement: (the vips sequence it was for, raw MAC, frames).
        # The takeover path then costs one getsockname() and the sends.
        self._last: tuple[tuple, bytes, list[bytes]] | None = None
        try:
            self._open()
        except AdapterError:
            # A missing interface may yet appear (the daemon starts before the link);
            # announce() opens the socket then. Anything else (EPERM) is fatal now.
            if if_index(ifname) is not None:
                raise

    def _open(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            except OSError as exc:
                raise AdapterError(f"cannot open a packet socket on {self.ifname}: {errno_text(exc)}") from None
            try:
                sock.bind((self.ifname, 0))     # protocol 0: send only, receive nothing
            except OSError as exc:
                sock.close()
                raise AdapterError(f"cannot announce on {self.ifname}: {errno_text(exc)}") from None
            self._sock = sock
        return self._sock

    @property
    def mac(self) -> str:
        """The interface's MAC address as the bound socket sees it now."""
        raw = self._open().getsockname()[4]
        return ":".join(f"{b:02x}" for b in raw)

    def frame(self, vip) -> bytes:
        mac = self.mac
        ip = ipaddress.ip_interface(vip).ip
        key = (mac, str(ip))
        if key not in self._cache:
            build = garp_frame if ip.version == 4 else unsolicited_na_frame
            self._cache[key] = build(mac, str(ip))
        return self._cache[key]

    def prepare(self, vips) -> None:
        """Build the frames ahead (about 1 ms each with scapy), so that the takeover
        path only sends them."""
        self._frames(tuple(vips))

    def _frames(self, vips: tuple) -> list[bytes]:
        """The frames for `vips` (the same as last time: reused while the interface's MAC
        is the same)."""
        raw = self._open().getsockname()[4]
        last = self._last
        if last is not None and last[1] == raw and last[0] == vips:
            return last[2]
        frames = [self.frame(v) for v in vips]
        self._last = (vips, raw, frames)
        return frames

    def announce(self, vips) -> int:
        """Send one frame per VIP; returns how many went out. On failure the socket is
        reopened next time (the interface may have been re-created) and AdapterError
        says how many of the frames were lost."""
        vips = tuple(vips)
        try:
            frames = self._frames(vips)
        except OSError as exc:
            self._reset()
            raise AdapterError(f"cannot announce on {self.ifname}: {errno_text(exc)}") from None
        sent, errors = 0, []
        for v, frame in zip(vips, frames):
            try:
                self._open().send(frame)
                sent += 1
            except (OSError, AdapterError) as exc:
                self._reset()
                errors.append(f"{ipaddress.ip_interface(v).ip}: {errno_text(exc)}")
        if errors:
            raise AdapterError(f"announcing on {self.ifname} sent {sent} of {len(frames)} frames; "
                               f"failed for {'; '.join(errors)}")
        return sent

    def _reset(self) -> None:
        self._last = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> "Announcer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
