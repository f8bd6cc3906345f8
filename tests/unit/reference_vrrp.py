"""An independent accept/drop oracle for received VRRP adverts, for the fuzz tests.

Written from RFC 3768 (VRRPv2) 5.1, 5.3.x and 7.1 and RFC 5798 (VRRPv3) 5.1, 5.2.x and
7.1, without reading havip's codec or checks, in a different shape on purpose: no
scapy, no ipaddress objects for the wire, its own one's-complement sum. Where the
RFCs leave a choice, the choices are havip's documented ones (docs/configuration.md,
havip/protocol/checks.py docstring), each named below:

* the length must be exactly what the count field says (keepalived does the same);
* a VRRPv3 IPv4 checksum may cover the pseudo-header (RFC 5798) or not (RFC 9568);
* in unicast mode the TTL is not checked but the source must be a configured peer;
* a differing VIP list is accepted (RFC 5798 7.1 "MAY verify", logged);
* a v3 interval differing from ours is accepted (RFC 5798 6.4.2: backups learn it);
* an interval of 0 is dropped (a v3 backup would learn a Master_Down_Interval of 0).

The config is the YAML document as a dict, not havip's parsed Config.
"""

from __future__ import annotations

import socket
import struct

PROTO_VRRP = 112


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071: 16-bit one's-complement sum of `data` (odd length padded with a zero)."""
    if len(data) & 1:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _verifies(data: bytes) -> bool:
    # A correct checksum makes the sum over everything, checksum included, all ones.
    return ones_complement_sum(data) == 0xFFFF


def _addr_bytes(text: object, family: int) -> bytes | None:
    if not isinstance(text, str):
        return None
    text = text.split("%", 1)[0]
    try:
        return socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, text)
    except (OSError, ValueError):
        return None


def _same_address(a: str, b: str, family: int) -> bool:
    x, y = _addr_bytes(a, family), _addr_bytes(b, family)
    return x is not None and x == y


def family_of(doc: dict) -> int:
    first = doc["virtual_ipaddresses"][0].split("/")[0]
    return 6 if ":" in first else 4


def accepts(payload: bytes, *, src: object, dst: object, ttl: int | None, doc: dict,
            own: set[str]) -> bool:
    """True if an advert with this VRRP `payload` must be accepted by the instance `doc`."""
    family = family_of(doc)
    src_raw, dst_raw = _addr_bytes(src, family), _addr_bytes(dst, family)
    if src_raw is None or dst_raw is None:
        return False                                    # not this socket's family
    if len(payload) < 8:
        return False                                    # shorter than the fixed header
    version, kind = payload[0] >> 4, payload[0] & 0xF
    if version not in (2, 3) or kind != 1:
        return False
    if version == 2 and family == 6:
        return False                                    # RFC 3768: IPv4 only
    count = payload[3]
    alen = 4 if family == 4 else 16
    if len(payload) != 8 + count * alen + (8 if version == 2 else 0):
        return False
    # Checksum (RFC 3768 5.3.8; RFC 5798 5.2.8 with the pseudo-header of RFC 768 / 8200 8.1).
    if version == 2:
        if not _verifies(payload):
            return False
    elif family == 4:
        pseudo = src_raw + dst_raw + bytes([0, PROTO_VRRP]) + len(payload).to_bytes(2, "big")
        if not (_verifies(pseudo + payload) or _verifies(payload)):
            return False
    else:
        pseudo = src_raw + dst_raw + len(payload).to_bytes(4, "big") + bytes([0, 0, 0, PROTO_VRRP])
        if not _verifies(pseudo + payload):
            return False
    # Our own packet, looped back.
    mine = set(own)
    uni = doc.get("unicast")
    if uni and uni.get("source"):
        mine.add(uni["source"])
    if any(_same_address(src, m, family) for m in mine):
        return False
    # Unicast: peers only, any TTL. Multicast: TTL 255 (RFC 5798 7.1), when it is known.
    if uni:
        if not any(_same_address(src, p, family) for p in uni["peers"]):
            return False
    elif ttl is not None and ttl != 255:
        return False
    if payload[1] != doc["virtual_router_id"]:
        return False
    if version != doc.get("version", 2):
        return False
    if version == 2:
        interval = payload[5]
        auth = doc.get("authentication", {})
        want_type = 1 if auth.get("type") == "pass" else 0
        if payload[4] != want_type:
            return False
        if want_type == 1:
            data = payload[len(payload) - 8:]
            if data != auth["password"].encode().ljust(8, b"\x00"):
                return False
        if interval != doc.get("advert_interval", 1):
            return False                                # RFC 3768 7.1 MUST
        return interval != 0
    centis = struct.unpack("!H", payload[4:6])[0] & 0x0FFF
    return centis != 0
