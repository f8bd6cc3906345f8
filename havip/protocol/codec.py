"""VRRP advertisements on the wire, v2 (RFC 3768 5.1) and v3 (RFC 5798 5.1), via scapy.

`encode` builds the VRRP payload (what follows the IP header) with scapy; `decode` turns
received payload bytes into an `Advert` or a `Drop` saying why not, and never raises. Only
the structure is checked here (length, version, type, address count, checksum, family);
the checks that need the configuration live in `havip.protocol.checks`.

Decode does not hand received bytes to scapy's parser: the fixed header is 8 bytes and
the address list is `count` slices whose total the length check has already bounded, so
the protocol itself bounds the work. scapy's VRRP layers refuse more than
`conf.max_list_count` (100) addresses by raising, although the count field holds 255
(RFC 5798 5.2.5), and one such packet used to stop the daemon.

Layouts (offsets in bytes):
    0 version<<4 | type   1 VRID   2 priority   3 count of addresses
    v2: 4 auth type, 5 interval (s)            v3: 4-5 rsvd(4 bits) | interval (cs, 12 bits)
    6-7 checksum, 8.. addresses (4 or 16 bytes each), v2 only: 8 bytes of auth data.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Literal

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.utils import checksum as inet_checksum

from havip.model import Advert, Drop, DropReason
from havip.protocol.timing import v3_centis_to_interval, v3_interval_to_centis

IPPROTO_VRRP = 112
IPPROTO_AH = 51              # RFC 2338 5.3.6: auth type 2 wraps the advert in IPsec AH
HEADER_LEN = 8               # fixed fields, RFC 3768 5.1 / RFC 5798 5.1
AUTH_LEN = 8                 # v2 authentication data, RFC 3768 5.3.10
ADVERTISEMENT = 1            # the only type, RFC 3768 5.3.2 / RFC 5798 5.2.2
IPV4_HEADER_LEN = 20
ADDR_LEN = {4: 4, 6: 16}

Checksum = Literal["pseudo-header", "message"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ---------------------------------------------------------------- encode


def encode(advert: Advert, *, src: str, dst: str, checksum: Checksum = "pseudo-header") -> bytes:
    """The VRRP payload for `advert`, sent from `src` to `dst` (the IP header is not included).

    v2: whole-second interval, auth type and 8-byte zero-padded password, checksum over
    the message (RFC 3768 5.3.8). v3: centisecond interval and, by default, the checksum
    with the IP pseudo-header (RFC 5798 5.2.8, keepalived's default); `checksum="message"`
    leaves the pseudo-header out, as RFC 9568 allows for IPv4. v3 over IPv6 always uses the
    IPv6 pseudo-header. Raises ValueError for an advert that cannot go on the wire.
    """
    if checksum not in ("pseudo-header", "message"):
        raise ValueError(f"checksum {checksum!r}: must be 'pseudo-header' or 'message'")
    family = _endpoints_family(src, dst)
    _check_common(advert, family)
    if advert.version == 2:
        return _encode_v2(advert, family)
    if advert.version == 3:
        return _encode_v3(advert, src, dst, family, checksum)
    raise ValueError(f"version {advert.version}: havip speaks VRRP 2 and 3")


def encode_own(cfg, priority: int, *, src: str, dst: str) -> bytes:
    """This host's advert at `priority` for config `cfg` (havip.config.Config): the
    daemon's adverts and `havip cleanup`'s resignation are built here, and only here."""
    auth = cfg.authentication
    advert = Advert(version=cfg.version, vrid=cfg.virtual_router_id, priority=priority,
                    interval=cfg.advert_interval, addresses=tuple(str(v.ip) for v in cfg.virtual_ipaddresses),
                    auth_type=1 if auth.type == "pass" else 0, password=auth.password.encode())
    return encode(advert, src=src, dst=dst, checksum=cfg.checksum)


def _endpoints_family(src: str, dst: str) -> int:
    # Parse before scapy sees them: scapy resolves anything that is not an address via DNS.
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version != b.version:
        raise ValueError(f"src {src} and dst {dst} are of different families")
    return a.version


def _check_common(advert: Advert, family: int) -> None:
    if not 1 <= advert.vrid <= 255:
        raise ValueError(f"vrid {advert.vrid}: must be 1-255 (RFC 5798 5.2.3)")
    if not 0 <= advert.priority <= 255:
        raise ValueError(f"priority {advert.priority}: must be 0-255")
    if len(advert.addresses) > 255:
        raise ValueError(f"{len(advert.addresses)} addresses: the count field holds 255")
    for addr in advert.addresses:
        if ipaddress.ip_address(addr).version != family:
            raise ValueError(f"address {addr} is not IPv{family} like the IP header")


def _encode_v2(advert: Advert, family: int) -> bytes:
    if family != 4:
        raise ValueError("VRRPv2 runs over IPv4 only (RFC 3768 1)")
    if advert.interval != int(advert.interval) or not 1 <= advert.interval <= 255:
        raise ValueError(f"interval {advert.interval}: VRRPv2 carries whole seconds 1-255")
    if not 0 <= advert.auth_type <= 255 or len(advert.password) > AUTH_LEN:
        raise ValueError("auth type must be 0-255 and the password at most 8 bytes")
    pad = advert.password.ljust(AUTH_LEN, b"\0")
    # scapy's VRRP.post_build fills in the message checksum (RFC 3768 5.3.8).
    layer = VRRP(vrid=advert.vrid, priority=advert.priority, ipcount=len(advert.addresses),
                 authtype=advert.auth_type, adv=int(advert.interval),
                 addrlist=list(advert.addresses),
                 auth1=int.from_bytes(pad[:4], "big"), auth2=int.from_bytes(pad[4:], "big"))
    return bytes(layer)


def _encode_v3(advert: Advert, src: str, dst: str, family: int, checksum: Checksum) -> bytes:
    centis = v3_interval_to_centis(advert.interval)
    if not 1 <= centis <= 0xFFF:
        raise ValueError(f"interval {advert.interval}: VRRPv3 carries 0.01-40.95 s (RFC 5798 5.2.7)")
    fields = dict(vrid=advert.vrid, priority=advert.priority, ipcount=len(advert.addresses),
                  adv=centis, addrlist=list(advert.addresses))
    if family == 6:
        # scapy's VRRPv3.post_build takes the pseudo-header from the IP(v6) underlayer.
        return bytes((IPv6(src=src, dst=dst, nh=IPPROTO_VRRP) / VRRPv3(**fields)).payload)
    if checksum == "pseudo-header":
        return bytes((IP(src=src, dst=dst, proto=IPPROTO_VRRP) / VRRPv3(**fields)).payload)
    raw = bytes((IP(src=src, dst=dst, proto=IPPROTO_VRRP) / VRRPv3(chksum=0, **fields)).payload)
    return raw[:6] + inet_checksum(raw).to_bytes(2, "big") + raw[8:]


# ---------------------------------------------------------------- decode


def decode(payload: bytes, *, src: str, dst: str, ttl: int | None, family: int) -> Advert | Drop:
    """Parse a received VRRP payload into an Advert, or say why it was dropped. Never raises.

    `src`/`dst` come from the IP header (the v3 checksum covers them), `ttl` is the IPv4
    TTL or IPv6 hop limit (None when unknown), `family` is 4 or 6 (the socket's).
    """
    try:
        return _decode(payload, src=src, dst=dst, ttl=ttl, family=family)
    except Exception as exc:  # noqa: BLE001 - a bug here must cost one packet, never the daemon
        return _drop(DropReason.MALFORMED, f"could not be parsed ({type(exc).__name__}: {exc})"[:200],
                     src if isinstance(src, str) else "")


def _decode(payload: bytes, *, src: str, dst: str, ttl: int | None, family: int) -> Advert | Drop:
    payload = bytes(payload)
    src_ip = _parse_ip(src)
    shown = str(src_ip) if src_ip else str(src)
    if family not in ADDR_LEN:
        return _drop(DropReason.BAD_FAMILY, f"address family {family!r} is neither 4 nor 6", shown)
    # Structure first: it needs no addresses, so a garbled packet counts as what it is.
    drop = _check_structure(payload, family, src=shown) or _check_endpoints(src_ip, dst, family, src)
    if drop is not None:
        return drop
    src, dst = str(src_ip), str(_parse_ip(dst))
    if not _checksum_ok(payload, family, src, dst):
        rfc = "RFC 3768 7.1" if payload[0] >> 4 == 2 else "RFC 5798 7.1"
        return _drop(DropReason.BAD_CHECKSUM, f"checksum 0x{payload[6:8].hex()} does not "
                     f"verify ({rfc})", src)
    return _to_advert(payload, family, src, ttl)


def decode_ipv4_packet(packet: bytes) -> Advert | Drop:
    """Decode a whole IPv4 packet (a raw IPv4 socket delivers the header too). Never raises.

    TTL, source and destination are read from the header; the VRRP payload ends where the
    header's total length says (anything after it is link padding).
    """
    try:
        return _decode_ipv4_packet(bytes(packet))
    except Exception as exc:  # noqa: BLE001 - see decode
        return _drop(DropReason.MALFORMED, f"could not be parsed ({type(exc).__name__}: {exc})"[:200])


def _decode_ipv4_packet(packet: bytes) -> Advert | Drop:
    if len(packet) < IPV4_HEADER_LEN:
        return _drop(DropReason.TRUNCATED, f"{len(packet)} bytes is shorter than an IPv4 header")
    if packet[0] >> 4 != 4:
        return _drop(DropReason.BAD_FAMILY, f"IP version {packet[0] >> 4} where IPv4 was expected")
    ihl, total = (packet[0] & 0x0F) * 4, int.from_bytes(packet[2:4], "big")
    if not IPV4_HEADER_LEN <= ihl <= total <= len(packet):
        return _drop(DropReason.TRUNCATED, f"IPv4 header length {ihl} and total length {total} "
                     f"do not fit the {len(packet)} bytes received")
    src = str(ipaddress.IPv4Address(packet[12:16]))
    dst = str(ipaddress.IPv4Address(packet[16:20]))
    proto = packet[9]
    if proto == IPPROTO_AH:
        return Drop(DropReason.AUTH_MISMATCH, "IPsec AH authentication (RFC 2338 auth type 2) "
                    "is not supported", src)
    if proto != IPPROTO_VRRP:
        return Drop(DropReason.BAD_TYPE, f"IP protocol {proto} is not VRRP (112)", src)
    return decode(packet[ihl:total], src=src, dst=dst, ttl=packet[8], family=4)


def _drop(reason: DropReason, detail: str, src: object = "") -> Drop:
    return Drop(reason, detail, str(src))


def _parse_ip(text: object) -> IPAddress | None:
    """The address without any IPv6 zone ("fe80::1%eth0", as recvfrom gives it)."""
    if not isinstance(text, str):
        return None
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _check_endpoints(src_ip: IPAddress | None, dst: str, family: int, src: str) -> Drop | None:
    """Both addresses must be of the socket's family: the v3 checksum covers them."""
    dst_ip = _parse_ip(dst)
    for role, text, ip in (("source", src, src_ip), ("destination", dst, dst_ip)):
        if ip is None or ip.version != family:
            return _drop(DropReason.BAD_FAMILY, f"{role} {text!r} is not an IPv{family} address",
                         src_ip if src_ip else src)
    return None


def _check_structure(payload: bytes, family: int, *, src: str) -> Drop | None:
    """Length, version, type and address count (RFC 3768 7.1, RFC 5798 7.1)."""
    if len(payload) < HEADER_LEN:
        return _drop(DropReason.TRUNCATED, f"{len(payload)} bytes is shorter than the "
                     f"{HEADER_LEN}-byte VRRP header", src)
    version, kind, count = payload[0] >> 4, payload[0] & 0x0F, payload[3]
    if version not in (2, 3):
        return _drop(DropReason.BAD_VERSION, f"VRRP version {version} is neither 2 nor 3", src)
    if version == 2 and family == 6:
        return _drop(DropReason.BAD_VERSION, "VRRPv2 advert over IPv6; v2 is IPv4 only "
                     "(RFC 3768 1)", src)
    if kind != ADVERTISEMENT:
        return _drop(DropReason.BAD_TYPE, f"packet type {kind} is not 1 (ADVERTISEMENT)", src)
    need = HEADER_LEN + count * ADDR_LEN[family] + (AUTH_LEN if version == 2 else 0)
    if len(payload) < need:
        return _drop(DropReason.TRUNCATED, f"{len(payload)} bytes but {_n_addresses(count)} "
                     f"need {need}", src)
    if len(payload) > need:
        return _drop(DropReason.BAD_ADDR_COUNT, f"{len(payload)} bytes but {_n_addresses(count)} "
                     f"make {need}", src)
    return None


def _n_addresses(count: int) -> str:
    return f"{count} address" + ("" if count == 1 else "es")


def _checksum_ok(payload: bytes, family: int, src: str, dst: str) -> bool:
    """RFC 3768 5.3.8 (v2: message only) and RFC 5798 5.2.8 (v3: with pseudo-header)."""
    if payload[0] >> 4 == 2:
        return inet_checksum(payload) == 0
    if family == 6:
        return inet_checksum(_pseudo_header(6, src, dst, len(payload)) + payload) == 0
    # v3 over IPv4: keepalived (by default) and RFC 5798 include the pseudo-header; Cisco,
    # Juniper and keepalived's v3_checksum_as_v2 leave it out, as RFC 9568 permits. Taking
    # either is safe: both are sums over the same bytes that anyone can recompute, so
    # neither authenticates the sender. They catch corruption, and a corrupted packet
    # matching the other variant by chance is as likely as it passing one checksum. What
    # protects the election is TTL 255 (on-link only) and, in unicast, the peer list.
    return (inet_checksum(_pseudo_header(4, src, dst, len(payload)) + payload) == 0
            or inet_checksum(payload) == 0)


def _pseudo_header(family: int, src: str, dst: str, length: int) -> bytes:
    """IPv4 (RFC 768) or IPv6 (RFC 8200 8.1) pseudo-header for upper-layer protocol 112."""
    a, b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if family == 4:
        return a + b + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    return a + b + struct.pack("!I3xB", length, IPPROTO_VRRP)


def _to_advert(payload: bytes, family: int, src: str, ttl: int | None) -> Advert | Drop:
    """Build the Advert from a payload whose structure and checksum were verified.

    `_check_structure` made len(payload) exactly what the count field says, so the
    slices below are bounded by the protocol (at most 255 addresses).
    """
    first, vrid, priority, count = payload[0], payload[1], payload[2], payload[3]
    version, size = first >> 4, ADDR_LEN[family]
    if version == 2:
        auth_type, interval = payload[4], float(payload[5])
        auth = payload[HEADER_LEN + count * size:][:AUTH_LEN].rstrip(b"\0")
    else:
        centis = int.from_bytes(payload[4:6], "big") & 0x0FFF      # 4 reserved bits
        interval, auth, auth_type = v3_centis_to_interval(centis), b"", 0
    if interval <= 0:
        # RFC 5798 6.4.2: a v3 backup adopts the master's interval; 0 would make its
        # Master_Down_Interval 0 and it would take over on every tick.
        return _drop(DropReason.BAD_INTERVAL, "advert interval is 0", src)
    raw = payload[HEADER_LEN:HEADER_LEN + count * size]
    addresses = tuple(str(ipaddress.ip_address(raw[i:i + size])) for i in range(0, len(raw), size))
    return Advert(version=version, vrid=vrid, priority=priority, interval=interval,
                  addresses=addresses, src=src, ttl=ttl, auth_type=auth_type, password=auth)
