"""The VRRP codec against keepalived's own packets, malformed input and random bytes."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scapy.layers.inet import IP, in4_chksum
from scapy.utils import checksum

from havip.model import Advert, Drop, DropReason
from havip.protocol.codec import decode, decode_ipv4_packet, encode
from tests.unit import vectors
from tests.unit.vectors import CAPTURES, Captured

H1, H2 = "198.18.0.11", "198.18.0.21"
MCAST4, MCAST6 = "224.0.0.18", "ff02::12"
LL6 = "fe80::fce5:e5ff:fee1:9f77"


def _decode(c: Captured) -> Advert | Drop:
    return decode(c.payload, src=c.src, dst=c.dst, ttl=c.ttl, family=c.family)


def _first(capture: str) -> Captured:
    return vectors.load(capture)[0]


# ---------------------------------------------------------------- keepalived captures


def test_vectors_are_present():
    # A fresh clone must have shared/ beside it; missing vectors fail, never skip.
    assert vectors.KEEPALIVED.is_dir(), f"{vectors.KEEPALIVED} is missing"
    for name in CAPTURES:
        assert (vectors.KEEPALIVED / f"keepalived-{name}.pcap").is_file()
        assert vectors.load(name), f"{name} holds no packets"


@pytest.mark.parametrize("capture", CAPTURES)
def test_every_captured_advert_decodes_to_its_config(capture):
    h1, h2 = vectors.conf(capture, "h1"), vectors.conf(capture, "h2")
    packets = vectors.load(capture)
    seen = set()
    for c in packets:
        advert = _decode(c)
        assert isinstance(advert, Advert), f"{capture}#{c.index}: {advert}"
        assert advert.version == h1.version == h2.version
        assert advert.vrid == h1.vrid == h2.vrid
        assert advert.interval == h1.advert_int == h2.advert_int
        assert advert.addresses == h1.vips == h2.vips
        assert advert.priority in {h1.priority, h2.priority, 0}
        assert advert.src == c.src and advert.ttl == 255
        if h1.auth_pass:
            assert (advert.auth_type, advert.password) == (1, h1.auth_pass.encode())
        else:
            assert (advert.auth_type, advert.password) == (0, b"")
        seen.add(advert.priority)
    # Startup, steady state and the priority-0 advert of a clean stop are all there.
    assert seen == {110, 91, 0}


@pytest.mark.parametrize("capture", CAPTURES)
def test_encoding_a_decoded_advert_gives_back_keepalived_bytes(capture):
    for c in vectors.load(capture):
        advert = _decode(c)
        assert encode(advert, src=c.src, dst=c.dst) == c.payload, f"{capture}#{c.index}"


@pytest.mark.parametrize("capture", ["v2-auth-pass", "v2-unicast-auth", "v3-10cs"])
def test_whole_ipv4_packets_decode_like_their_payloads(capture):
    for c in vectors.load(capture):
        assert decode_ipv4_packet(c.ip_packet) == _decode(c)


def test_unicast_capture_goes_between_the_configured_addresses():
    h1, h2 = vectors.conf("v2-unicast-auth", "h1"), vectors.conf("v2-unicast-auth", "h2")
    pairs = {(c.src, c.dst) for c in vectors.load("v2-unicast-auth")}
    assert pairs == {(h1.unicast_src, h1.unicast_peers[0]), (h2.unicast_src, h2.unicast_peers[0])}


def test_hand_built_adverts_match_keepalived_bytes():
    v2 = Advert(2, 51, 110, 1.0, ("198.18.0.50",), auth_type=1, password=b"1111")
    assert encode(v2, src=H1, dst=MCAST4) == _first("v2-auth-pass").payload
    v3 = Advert(3, 51, 110, 0.1, ("198.18.0.50",))
    assert encode(v3, src=H1, dst=MCAST4) == _first("v3-10cs").payload
    v6 = Advert(3, 53, 110, 0.5, ("fd00:198:18::50",))
    assert encode(v6, src=LL6, dst=MCAST6) == _first("v3-ipv6").payload


# ---------------------------------------------------------------- checksum variants


def test_v3_ipv4_accepts_pseudo_header_and_message_only_checksums():
    advert = Advert(3, 51, 110, 0.1, ("198.18.0.50",))
    pseudo = encode(advert, src=H1, dst=MCAST4, checksum="pseudo-header")
    message = encode(advert, src=H1, dst=MCAST4, checksum="message")
    assert pseudo != message and pseudo[:6] == message[:6] and pseudo[8:] == message[8:]
    for payload in (pseudo, message):
        got = decode(payload, src=H1, dst=MCAST4, ttl=255, family=4)
        assert got == Advert(3, 51, 110, 0.1, ("198.18.0.50",), src=H1, ttl=255)


def test_v3_ipv4_message_checksum_roundtrips():
    advert = Advert(3, 51, 91, 0.1, ("198.18.0.50",), src=H2, ttl=255)
    payload = encode(advert, src=H2, dst=MCAST4, checksum="message")
    assert decode(payload, src=H2, dst=MCAST4, ttl=255, family=4) == advert


def test_v3_pseudo_header_binds_the_addresses():
    payload = _first("v3-10cs").payload          # checksummed for 198.18.0.11 -> 224.0.0.18
    got = decode(payload, src="198.18.0.12", dst=MCAST4, ttl=255, family=4)
    assert isinstance(got, Drop) and got.reason is DropReason.BAD_CHECKSUM


def test_ipv6_always_uses_the_pseudo_header():
    advert = Advert(3, 53, 110, 0.5, ("fd00:198:18::50",))
    assert encode(advert, src=LL6, dst=MCAST6, checksum="message") == _first("v3-ipv6").payload


def test_v2_checksum_ignores_the_ip_addresses():
    payload = _first("v2-auth-pass").payload
    assert isinstance(decode(payload, src="10.0.0.1", dst="10.0.0.2", ttl=255, family=4), Advert)


@pytest.mark.parametrize("capture", CAPTURES)
def test_corrupt_checksum_is_dropped(capture):
    c = _first(capture)
    bad = c.payload[:6] + bytes([c.payload[6] ^ 0x01]) + c.payload[7:]
    got = decode(bad, src=c.src, dst=c.dst, ttl=c.ttl, family=c.family)
    assert got == Drop(DropReason.BAD_CHECKSUM, got.detail, c.src)
    assert got.detail.startswith("checksum 0x")


@pytest.mark.parametrize("capture", ["v2-auth-pass", "v2-unicast-auth", "v3-ipv6"])
def test_any_single_byte_change_is_dropped(capture):
    # One's complement sums catch every single-byte change. (v3 over IPv4 is left out on
    # purpose: accepting two checksum variants means a change can hit the other one.)
    c = _first(capture)
    for i in range(len(c.payload)):
        for delta in (0x01, 0x80, 0xFF):
            bad = c.payload[:i] + bytes([c.payload[i] ^ delta]) + c.payload[i + 1:]
            got = decode(bad, src=c.src, dst=c.dst, ttl=c.ttl, family=c.family)
            assert isinstance(got, Drop), f"byte {i} ^ {delta:#x} accepted: {got}"


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize("capture", CAPTURES)
def test_truncated_at_every_length(capture):
    c = _first(capture)
    for n in range(len(c.payload)):
        got = decode(c.payload[:n], src=c.src, dst=c.dst, ttl=c.ttl, family=c.family)
        assert isinstance(got, Drop) and got.reason is DropReason.TRUNCATED, (n, got)
        assert got.src == c.src and got.detail


def test_trailing_bytes_disagree_with_the_count():
    c = _first("v3-10cs")
    got = decode(c.payload + b"\0\0\0\0", src=c.src, dst=c.dst, ttl=255, family=4)
    assert got.reason is DropReason.BAD_ADDR_COUNT
    assert got.detail == "16 bytes but 1 address make 12"


@pytest.mark.parametrize("count,reason", [(255, DropReason.TRUNCATED), (2, DropReason.TRUNCATED),
                                          (0, DropReason.BAD_ADDR_COUNT)])
def test_address_count_that_disagrees_with_the_length(count, reason):
    c = _first("v2-auth-pass")
    bad = c.payload[:3] + bytes([count]) + c.payload[4:]
    assert decode(bad, src=c.src, dst=c.dst, ttl=255, family=4).reason is reason


@pytest.mark.parametrize("version", [0, 1, 4, 15])
def test_wrong_version(version):
    c = _first("v3-10cs")
    bad = bytes([version << 4 | 1]) + c.payload[1:]
    got = decode(bad, src=c.src, dst=c.dst, ttl=255, family=4)
    assert got.reason is DropReason.BAD_VERSION and f"version {version}" in got.detail


def test_v2_over_ipv6_is_a_wrong_version():
    c = _first("v3-ipv6")
    got = decode(bytes([0x21]) + c.payload[1:], src=c.src, dst=c.dst, ttl=255, family=6)
    assert got.reason is DropReason.BAD_VERSION


@pytest.mark.parametrize("kind", [0, 2, 15])
def test_type_other_than_advertisement(kind):
    c = _first("v2-auth-pass")
    got = decode(bytes([0x20 | kind]) + c.payload[1:], src=c.src, dst=c.dst, ttl=255, family=4)
    assert got.reason is DropReason.BAD_TYPE


@pytest.mark.parametrize("capture,src,dst,family", [
    ("v3-10cs", LL6, MCAST4, 4), ("v3-10cs", H1, MCAST6, 4), ("v3-10cs", "not-an-ip", MCAST4, 4),
    ("v3-10cs", H1, "", 4), ("v3-10cs", H1, MCAST4, 5), ("v3-ipv6", H1, MCAST4, 6),
])
def test_family_mismatch(capture, src, dst, family):
    got = decode(_first(capture).payload, src=src, dst=dst, ttl=255, family=family)
    assert got.reason is DropReason.BAD_FAMILY


def test_structure_is_judged_before_the_addresses():
    # A raw socket that could not parse the IP header hands over b"" and no addresses.
    got = decode(b"", src=H1, dst="", ttl=None, family=4)
    assert got.reason is DropReason.TRUNCATED and got.src == H1


def test_ipv6_zone_is_dropped_from_the_source():
    c = _first("v3-ipv6")
    got = decode(c.payload, src=f"{c.src}%eth0", dst=c.dst, ttl=255, family=6)
    assert isinstance(got, Advert) and got.src == c.src


@pytest.mark.parametrize("version", [2, 3])
def test_zero_interval_is_dropped(version):
    c = _first("v2-auth-pass" if version == 2 else "v3-10cs")
    edited = bytearray(c.payload)
    edited[5] = 0                               # v2: seconds; v3: low byte of centiseconds
    edited[4] &= 0xF0 if version == 3 else 0xFF
    fixed = _fix_checksum(bytes(edited), version, c)
    got = decode(fixed, src=c.src, dst=c.dst, ttl=255, family=4)
    assert got.reason is DropReason.BAD_INTERVAL


def _fix_checksum(payload: bytes, version: int, c: Captured) -> bytes:
    zeroed = payload[:6] + b"\0\0" + payload[8:]
    ck = checksum(zeroed) if version == 2 else in4_chksum(112, IP(src=c.src, dst=c.dst), zeroed)
    return zeroed[:6] + ck.to_bytes(2, "big") + zeroed[8:]


# ---------------------------------------------------------------- whole IPv4 packets


def test_ipv4_header_fields_are_read():
    c = _first("v2-auth-pass")
    lower_ttl = c.ip_packet[:8] + bytes([64]) + c.ip_packet[9:]
    got = decode_ipv4_packet(lower_ttl + b"\0" * 6)          # link padding after tot_len
    assert isinstance(got, Advert) and (got.ttl, got.src) == (64, H1)


@pytest.mark.parametrize("edit,reason", [
    (lambda p: p[:19], DropReason.TRUNCATED),
    (lambda p: bytes([0x65]) + p[1:], DropReason.BAD_FAMILY),
    (lambda p: bytes([0x44]) + p[1:], DropReason.TRUNCATED),          # IHL 4 < 5
    (lambda p: bytes([0x4F]) + p[1:], DropReason.TRUNCATED),          # IHL 60 > packet
    (lambda p: p[:2] + (len(p) + 1).to_bytes(2, "big") + p[4:], DropReason.TRUNCATED),
    (lambda p: p[:9] + bytes([51]) + p[10:], DropReason.AUTH_MISMATCH),  # IPsec AH
    (lambda p: p[:9] + bytes([6]) + p[10:], DropReason.BAD_TYPE),
    (lambda p: p[:2] + (len(p) - 4).to_bytes(2, "big") + p[4:], DropReason.TRUNCATED),
])
def test_broken_ipv4_headers(edit, reason):
    got = decode_ipv4_packet(edit(_first("v2-auth-pass").ip_packet))
    assert isinstance(got, Drop) and got.reason is reason and got.detail


# ---------------------------------------------------------------- encode refuses bad adverts


@pytest.mark.parametrize("advert,src,dst", [
    (Advert(2, 51, 110, 1.5, ("198.18.0.50",)), H1, MCAST4),          # v2: whole seconds
    (Advert(2, 51, 110, 0, ("198.18.0.50",)), H1, MCAST4),
    (Advert(2, 53, 110, 1, ("fd00::50",)), LL6, MCAST6),              # v2 is IPv4 only
    (Advert(2, 51, 110, 1, ("198.18.0.50",), auth_type=1, password=b"123456789"), H1, MCAST4),
    (Advert(3, 51, 110, 0.001, ("198.18.0.50",)), H1, MCAST4),
    (Advert(3, 51, 110, 41.0, ("198.18.0.50",)), H1, MCAST4),
    (Advert(3, 51, 110, 1, ("fd00::50",)), H1, MCAST4),               # VIP family != header
    (Advert(3, 0, 110, 1, ("198.18.0.50",)), H1, MCAST4),
    (Advert(3, 51, 256, 1, ("198.18.0.50",)), H1, MCAST4),
    (Advert(4, 51, 110, 1, ("198.18.0.50",)), H1, MCAST4),
    (Advert(3, 51, 110, 1, ("198.18.0.50",)), H1, MCAST6),            # src/dst families differ
    (Advert(3, 51, 110, 1, ("198.18.0.50",)), "localhost", MCAST4),  # never resolved via DNS
])
def test_encode_refuses_what_cannot_go_on_the_wire(advert, src, dst):
    with pytest.raises(ValueError):
        encode(advert, src=src, dst=dst)


def test_encode_refuses_unknown_checksum_mode():
    with pytest.raises(ValueError):
        encode(Advert(3, 51, 110, 1, ("198.18.0.50",)), src=H1, dst=MCAST4, checksum="none")


# ---------------------------------------------------------------- properties

ADDRESS_TEXT = st.sampled_from([H1, H2, MCAST4, LL6, MCAST6, "", "garbage", "::", "fe80::1%eth0"])


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=600), src=ADDRESS_TEXT, dst=ADDRESS_TEXT,
       ttl=st.none() | st.integers(0, 255), family=st.sampled_from([4, 6, 0, 2, 10]))
def test_decode_never_raises_on_random_bytes(payload, src, dst, ttl, family):
    assert isinstance(decode(payload, src=src, dst=dst, ttl=ttl, family=family), Advert | Drop)


@settings(max_examples=300, deadline=None)
@given(first=st.sampled_from([0x21, 0x31]), vrid=st.integers(0, 255), prio=st.integers(0, 255),
       count=st.integers(0, 255), tail=st.binary(max_size=80), family=st.sampled_from([4, 6]))
def test_decode_never_raises_on_plausible_headers(first, vrid, prio, count, tail, family):
    payload = bytes([first, vrid, prio, count]) + tail
    src, dst = (H1, MCAST4) if family == 4 else (LL6, MCAST6)
    assert isinstance(decode(payload, src=src, dst=dst, ttl=255, family=family), Advert | Drop)


@settings(max_examples=300, deadline=None)
@given(packet=st.binary(max_size=120) | st.binary(min_size=20, max_size=80).map(
    lambda b: bytes([0x45]) + b[1:2] + len(b).to_bytes(2, "big") + b[4:9] + b"\x70" + b[10:]))
def test_decode_ipv4_packet_never_raises(packet):
    assert isinstance(decode_ipv4_packet(packet), Advert | Drop)


def _addresses(family: int):
    if family == 4:
        return st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=8)
    return st.lists(st.ip_addresses(v=6).map(str), min_size=1, max_size=4)


@st.composite
def adverts(draw):
    version = draw(st.sampled_from([2, 3]))
    family = 4 if version == 2 else draw(st.sampled_from([4, 6]))
    interval = (float(draw(st.integers(1, 255))) if version == 2
                else draw(st.integers(1, 4095)) / 100)
    auth_type = draw(st.sampled_from([0, 1])) if version == 2 else 0
    password = draw(st.binary(max_size=8).map(lambda b: b.rstrip(b"\0"))) if auth_type else b""
    src = str(draw(st.ip_addresses(v=family)))
    advert = Advert(version, draw(st.integers(1, 255)), draw(st.integers(0, 255)), interval,
                    tuple(str(ipaddress.ip_address(a)) for a in draw(_addresses(family))),
                    src=src, ttl=255, auth_type=auth_type, password=password)
    return advert, family, MCAST4 if family == 4 else MCAST6


@settings(max_examples=200, deadline=None)
@given(case=adverts(), mode=st.sampled_from(["pseudo-header", "message"]))
def test_encode_then_decode_is_identity(case, mode):
    advert, family, dst = case
    payload = encode(advert, src=advert.src, dst=dst, checksum=mode)
    assert decode(payload, src=advert.src, dst=dst, ttl=255, family=family) == advert
