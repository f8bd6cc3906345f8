"""The keepalived captures in tests/vectors/keepalived and the configs that made them.

The captures are the ground truth for the codec. They are part of the repository (a clone
must not depend on anything beside it), so a missing file is an error, never a skip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.utils import rdpcap

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
KEEPALIVED = VECTORS / "keepalived"

# Listed, not globbed: an empty or missing directory must fail the tests, not empty them.
CAPTURES = ("v2-auth-pass", "v2-unicast-auth", "v3-10cs", "v3-ipv6")


@dataclass(frozen=True)
class Captured:
    """One VRRP packet from a capture, split the way a raw socket would hand it over."""

    capture: str
    index: int
    src: str
    dst: str
    ttl: int
    family: int
    payload: bytes          # the VRRP message
    ip_packet: bytes        # IPv4 header + payload (b"" for IPv6: the socket strips it)


@dataclass(frozen=True)
class KeepalivedConf:
    """The handful of keepalived.conf settings the captures depend on."""

    version: int
    vrid: int
    priority: int
    advert_int: float
    auth_pass: str | None
    vips: tuple[str, ...]
    unicast_src: str | None
    unicast_peers: tuple[str, ...]

    def havip_config(self, interface: str = "eth0") -> dict:
        """The same instance as a havip YAML document (before validation)."""
        doc: dict = {"interface": interface, "virtual_router_id": self.vrid,
                     "priority": self.priority, "version": self.version,
                     "advert_interval": self.advert_int, "virtual_ipaddresses": list(self.vips)}
        if self.auth_pass:
            doc["authentication"] = {"type": "pass", "password": self.auth_pass}
        if self.unicast_peers:
            doc["unicast"] = {"source": self.unicast_src, "peers": list(self.unicast_peers)}
        return doc


def load(capture: str) -> list[Captured]:
    """Every packet of keepalived-CAPTURE.pcap (raises if the file is missing)."""
    path = KEEPALIVED / f"keepalived-{capture}.pcap"
    if not path.is_file():
        raise FileNotFoundError(f"test vector {path} is missing (tests/vectors/ is part of the repository)")
    return [_split(capture, i, frame) for i, frame in enumerate(rdpcap(str(path)))]


def _split(capture: str, index: int, frame) -> Captured:
    if IP in frame:
        ip = frame[IP]
        raw = bytes(ip)[: ip.len]
        return Captured(capture, index, ip.src, ip.dst, ip.ttl, 4, raw[ip.ihl * 4:], raw)
    ip6 = frame[IPv6]
    raw = bytes(ip6)
    return Captured(capture, index, ip6.src, ip6.dst, ip6.hlim, 6, raw[40: 40 + ip6.plen], b"")


def conf(capture: str, host: str) -> KeepalivedConf:
    """Parse CAPTURE.HOST.conf (host is "h1" or "h2"): only what the captures need."""
    text = (KEEPALIVED / f"{capture}.{host}.conf").read_text()

    def value(key: str) -> str | None:
        m = re.search(rf"^\s*{key}\s+(\S+)", text, re.M)
        return m.group(1) if m else None

    def block(key: str) -> tuple[str, ...]:
        m = re.search(rf"{key}\s*\{{([^}}]*)\}}", text)
        return tuple(line.split("/")[0] for line in m.group(1).split()) if m else ()

    return KeepalivedConf(
        version=int(value("vrrp_version") or 2), vrid=int(value("virtual_router_id")),
        priority=int(value("priority")), advert_int=float(value("advert_int")),
        auth_pass=value("auth_pass"), vips=block("virtual_ipaddress"),
        unicast_src=value("unicast_src_ip"), unicast_peers=block("unicast_peer"))
