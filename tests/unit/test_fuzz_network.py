"""The standing adversarial suite for network input (issue 9): adverts and beacons.

* A seeded mutation fuzzer over the keepalived captures (tests/vectors/keepalived) runs
  every case through havip's receive path (codec.decode + checks, via the Receiver;
  a quarter of the IPv4 cases as whole packets through decode_ipv4_packet) and through
  an independent oracle written from the RFCs (tests/unit/reference_vrrp.py). They must
  agree on accept/drop for every case, and nothing may raise.
* The same mutants, fewer of them, go through the real Daemon loop over the fakes:
  no exception escapes, no input error is counted.
* hypothesis properties: arbitrary bytes and structured-but-wrong adverts never raise.
* Beacons: mutants of signed beacons (some re-signed, so the schema is reached) through
  the peer table; what is believed is exactly what an independent HMAC check and schema
  check accept.

Case counts are fixed by the seeds (about 70,000 per run; docs/security.md has the
figures). The full-size lab run is `make fuzz`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import struct
import zlib

import pytest
import structlog
from hypothesis import HealthCheck, given, settings, strategies as st

from havip import config
from havip.daemon.peers import Peers
from havip.daemon.receive import Receiver
from havip.model import Advert, Drop
from havip.net.sock import Received
from havip.protocol import codec
from havip.protocol.beacon import MAGIC, Keyring, PeerState, Refused, encode as encode_beacon
from tests.fakes import FakeBeacon, FakeClock
from tests.unit import reference_vrrp as ref
from tests.unit import vectors

ADVERT_CASES_PER_CAPTURE = 12_500         # x 4 captures = 50,000
LOOP_CASES = 4_000
BEACON_CASES = 12_000
INTERESTING = (0, 1, 2, 3, 0x0F, 0x10, 0x21, 0x31, 0x64, 0x65, 0x7F, 0x80, 0xFE, 0xFF)


@pytest.fixture(autouse=True)
def _quiet_logs():
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    yield
    structlog.reset_defaults()


# ---------------------------------------------------------------- the mutator


def _fix_checksum(payload: bytearray, family: int, src: str, dst: str, rng: random.Random) -> None:
    """Recompute the checksum (as a sender would), so that mutants reach the later checks."""
    if len(payload) < 8:
        return
    payload[6:8] = b"\0\0"
    if payload[0] >> 4 == 3 and (family == 6 or rng.random() < 0.7):
        s, d = ref._addr_bytes(src, family), ref._addr_bytes(dst, family)
        if s is None or d is None:
            return
        if family == 4:
            pseudo = s + d + bytes([0, 112]) + len(payload).to_bytes(2, "big")
        else:
            pseudo = s + d + len(payload).to_bytes(4, "big") + bytes([0, 0, 0, 112])
        total = ref.ones_complement_sum(pseudo + bytes(payload))
    else:
        total = ref.ones_complement_sum(bytes(payload))
    payload[6:8] = struct.pack("!H", ~total & 0xFFFF)


def _mutate_payload(base: bytes, family: int, rng: random.Random) -> bytearray:
    p = bytearray(base)
    for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
        op = rng.randrange(10)
        if op == 0 and p:
            i = rng.randrange(len(p))
            p[i] ^= 1 << rng.randrange(8)
        elif op == 1 and p:
            p[rng.randrange(len(p))] = rng.choice(INTERESTING)
        elif op == 2 and p:
            del p[rng.randrange(len(p) + 1):]
        elif op == 3:
            p += rng.randbytes(rng.choice((1, 4, 8, 16, 64)))
        elif op == 4 and len(p) >= 8:
            # Change the count and the list with it: 0-255 addresses, consistent length.
            alen = 4 if family == 4 else 16
            count = rng.choice((0, 1, 2, 99, 100, 101, 200, 255, rng.randrange(256)))
            tail = p[8 + p[3] * alen:] if p[0] >> 4 == 2 else b""
            p[3] = count
            p[8:] = rng.randbytes(count * alen) if rng.random() < 0.5 else bytes(count * alen)
            p += tail
        elif op == 5 and p:
            p[0] = (rng.choice((0, 1, 2, 3, 4, 15)) << 4) | rng.choice((0, 1, 1, 1, 2, 15))
        elif op == 6 and len(p) > 1:
            p[1] = rng.choice((51, 52, 53, 0, 255, rng.randrange(256)))
        elif op == 7 and len(p) > 2:
            p[2] = rng.choice((0, 1, 100, 254, 255))
        elif op == 8 and len(p) > 5:
            p[4:6] = rng.randbytes(2) if rng.random() < 0.5 else bytes([p[4], rng.choice((0, 1, 2, 3))])
        elif op == 9 and len(p) >= 16 and p[0] >> 4 == 2:
            p[-8:] = rng.choice((b"1111", b"secret12", b"", b"\0\0\0\0\0\0\0\x01")).ljust(8, b"\0")
    return p


def _meta(c: vectors.Captured, peer_src: str, own: str, rng: random.Random) -> tuple[object, object, int | None]:
    stranger = "198.18.7.7" if c.family == 4 else "fe80::dead:beef"
    src = rng.choice((c.src, c.src, peer_src, own, stranger, "not-an-address", "fd00::1" if c.family == 4
                      else "198.18.0.1", f"{c.src}%eth0" if c.family == 6 else c.src, None))
    dst = rng.choice((c.dst, c.dst, c.dst, "198.18.0.11" if c.family == 4 else "fe80::1", "garbage"))
    ttl = rng.choice((c.ttl, c.ttl, 255, 254, 64, 1, 0, None))
    return src, dst, ttl


def _cases(capture: str, n: int, seed: int):
    """(payload, src, dst, ttl) mutants of the capture's packets, deterministic."""
    rng = random.Random(seed)
    packets = vectors.load(capture)
    conf = vectors.conf(capture, "h1")
    own = next(c.src for c in packets if c.payload[2] == conf.priority)
    peer = next(c.src for c in packets if c.src != own)
    for _ in range(n):
        c = rng.choice(packets)
        src, dst, ttl = _meta(c, peer, own, rng)
        payload = _mutate_payload(c.payload, c.family, rng)
        if rng.random() < 0.6 and isinstance(src, str) and isinstance(dst, str):
            _fix_checksum(payload, c.family, src, dst, rng)
        yield c, bytes(payload), src, dst, ttl, own


# ---------------------------------------------------------------- adverts: havip against the oracle


@pytest.mark.parametrize("capture", vectors.CAPTURES)
def test_mutated_captures_havip_agrees_with_the_reference(capture):
    doc = vectors.conf(capture, "h1").havip_config()
    cfg = config.parse(doc, default_instance="fuzz")
    rx = Receiver(log=structlog.get_logger(), clock=FakeClock())
    disagree, accepted, whole = [], 0, 0
    rng = random.Random(f"whole-{capture}")
    for c, payload, src, dst, ttl, own in _cases(capture, ADVERT_CASES_PER_CAPTURE, seed=zlib.crc32(capture.encode())):
        got = rx.handle(Received(payload, src, dst, ttl), cfg, {own})
        want = ref.accepts(payload, src=src, dst=dst, ttl=ttl, doc=doc, own={own})
        if (got is not None) != want and len(disagree) < 5:
            disagree.append((payload.hex(), src, dst, ttl, want, got, rx.drops))
        if got is not None:
            accepted += 1
            assert got.vrid == payload[1] and got.priority == payload[2] and len(got.addresses) == payload[3]
        if c.family == 4 and isinstance(src, str) and rng.random() < 0.25:
            # The whole IPv4 packet (a raw socket's view), with its header mutated too.
            whole += 1
            header = bytearray(c.ip_packet[:20])
            header[2:4] = (20 + len(payload)).to_bytes(2, "big")
            if rng.random() < 0.2:
                header[rng.randrange(20)] = rng.choice(INTERESTING)
            result = codec.decode_ipv4_packet(bytes(header) + payload + rng.randbytes(rng.choice((0, 0, 6))))
            assert isinstance(result, (Advert, Drop))
    assert not disagree, f"havip and the RFC reference disagree: {disagree}"
    assert rx.received == ADVERT_CASES_PER_CAPTURE
    assert sum(rx.drops.values()) + accepted == ADVERT_CASES_PER_CAPTURE
    assert "malformed" not in rx.drops and "internal_error" not in rx.drops
    assert accepted > ADVERT_CASES_PER_CAPTURE // 50, "the fuzzer must reach the accept path too"
    print(f"\n{capture}: {ADVERT_CASES_PER_CAPTURE} adverts (+{whole} whole packets), {accepted} accepted, "
          f"drops {dict(sorted(rx.drops.items()))}")


def test_mutants_through_the_real_daemon_loop():
    from tests.unit.test_daemon import make

    d, sock, vips, link, clock, rt = make()
    d.start()
    doc = vectors.conf("v2-auth-pass", "h1").havip_config()
    n = 0
    for i, (c, payload, src, dst, ttl, own) in enumerate(_cases("v2-auth-pass", LOOP_CASES, seed=7)):
        sock.deliver(payload, src, ttl=ttl, dst=dst)
        n += 1
        if i % 50 == 49:
            d.run_once()                          # 50 queued: the loop reads at most 64 a turn
            clock.advance(0.05)
    d.run_once()
    d.run_once()
    assert d.receiver.received == n == LOOP_CASES
    assert dict(d.input_errors) == {} and "internal_error" not in d.drops
    assert d.machine.state.value in ("backup", "master")
    assert doc["virtual_router_id"] == 51


PROPS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DOC_V3 = vectors.conf("v3-10cs", "h1").havip_config()
CFG_V3 = config.parse(DOC_V3, default_instance="fuzz")


@PROPS
@given(payload=st.binary(max_size=1100), ttl=st.one_of(st.none(), st.integers(0, 255)),
       src=st.sampled_from(["198.18.0.21", "198.18.0.11", "10.0.0.1", "::1", "x", ""]))
def test_any_bytes_are_an_advert_or_a_drop_and_agree_with_the_reference(payload, ttl, src):
    got = codec.decode(payload, src=src, dst="224.0.0.18", ttl=ttl, family=4)
    assert isinstance(got, (Advert, Drop))
    rx = Receiver(log=structlog.get_logger(), clock=FakeClock())
    accepted = rx.handle(Received(payload, src, "224.0.0.18", ttl), CFG_V3, {"198.18.0.11"}) is not None
    assert accepted == ref.accepts(payload, src=src, dst="224.0.0.18", ttl=ttl, doc=DOC_V3, own={"198.18.0.11"})


@PROPS
@given(version=st.sampled_from([2, 3]), vrid=st.integers(0, 255), prio=st.integers(0, 255),
       count=st.integers(0, 255), word=st.integers(0, 0xFFFF), extra=st.integers(-3, 3),
       fix=st.booleans(), family=st.sampled_from([4, 6]))
def test_structured_adverts_never_raise(version, vrid, prio, count, word, extra, fix, family):
    alen = 4 if family == 4 else 16
    body = bytearray([version << 4 | 1, vrid, prio, count]) + word.to_bytes(2, "big") + b"\0\0"
    body += bytes(max(0, count * alen + (8 if version == 2 else 0) + extra))
    src, dst = ("198.18.0.21", "224.0.0.18") if family == 4 else ("fe80::1", "ff02::12")
    if fix:
        _fix_checksum(body, family, src, dst, random.Random(word))
    got = codec.decode(bytes(body), src=src, dst=dst, ttl=255, family=family)
    assert isinstance(got, (Advert, Drop))
    if isinstance(got, Advert):
        assert len(got.addresses) == count


# ---------------------------------------------------------------- beacons


KEY = b"fuzz-key-fuzz-key-fuzz-key"
RING = Keyring([KEY])
PEER, OWN = "198.18.0.21", "198.18.0.11"
WALL = 1_800_000_000.0
INFO = {"instance": "h2", "vrid": 51, "state": "backup", "priority": 91, "healthy": True, "paused": False,
        "container": "stopped"}
FIELDS = {"from": str, "ts": (int, float), "instance": str, "vrid": int, "state": str, "priority": int,
          "healthy": (bool, type(None)), "paused": bool, "container": (str, type(None))}


def _oracle_believes(data: bytes, src: str, ttl, last_ts: float | None) -> bool:
    """Independent of havip.protocol.beacon: what a correct receiver may believe (multicast:
    any holder of the key on the link, not ourselves, claiming its real source)."""
    if len(data) > 512 or data[:4] != b"HVB2" or src == OWN or ttl not in (255, None):
        return False
    mac, body = data[4:36], data[36:]
    if len(mac) != 32 or not hmac.compare_digest(hmac.new(KEY, b"HVB2" + body, hashlib.sha256).digest(), mac):
        return False
    if any(b < 0x20 or b > 0x7E for b in body):
        return False
    try:
        msg = json.loads(body)
    except ValueError:
        return False
    if not isinstance(msg, dict) or set(msg) != set(FIELDS):
        return False
    for k, kind in FIELDS.items():
        v = msg[k]
        if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, (int, float))):
            return False
    import re
    return (msg["from"] == src and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", msg["instance"]) is not None
            and msg["vrid"] == 51 and msg["state"] in {"init", "backup", "master", "fault", "stopped"}
            and 0 <= msg["priority"] <= 255 and abs(msg["ts"] - WALL) <= 30 and msg["ts"] > 0
            and (msg["container"] is None or msg["container"] in
                 {"stopped", "waiting", "leasing", "starting", "running", "stopping"})
            and (last_ts is None or msg["ts"] > last_ts))


def _beacon_mutant(rng: random.Random, i: int) -> tuple[bytes, str, int | None]:
    info = dict(INFO)
    body: dict = {"from": PEER, "ts": WALL + i * 1e-3, **info}
    op = rng.randrange(8)
    if op == 1:
        body[rng.choice(list(body))] = rng.choice((None, True, 0, -1, 256, 1e308, "x" * 70, "a\nb", [], {}))
    elif op == 2:
        del body[rng.choice(list(body))]
    elif op == 3:
        body["extra"] = rng.randrange(10)
    elif op == 4:
        body["ts"] = WALL + rng.choice((-31, 31, -1e6, 0))
    elif op == 5:
        body["from"] = rng.choice(("198.18.0.99", OWN, "::1", ""))
    raw = json.dumps(body, separators=(",", ":")).encode()
    if op == 6:
        raw = rng.choice((b"[" * 1000, b"{" * 300, b'{"a":' * 100 + b"1" + b"}" * 100, rng.randbytes(60)))
    key = KEY if rng.random() < 0.85 else b"wrong-key-wrong-key-wrong"
    data = bytearray(MAGIC + hmac.new(key, MAGIC + raw, hashlib.sha256).digest() + raw)
    if op == 7:
        for _ in range(rng.randrange(1, 4)):
            j = rng.randrange(len(data))
            data[j] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)):]
    src = rng.choice((PEER, PEER, PEER, OWN, "198.18.0.99"))
    ttl = rng.choice((255, 255, 255, 64, None))
    return bytes(data), src, ttl


def test_mutated_beacons_the_table_believes_exactly_what_the_oracle_does():
    rng = random.Random(2026)
    peers = Peers()
    believed, last_ts = 0, {}
    for i in range(BEACON_CASES):
        data, src, ttl = _beacon_mutant(rng, i)
        want = _oracle_believes(data, src, ttl, last_ts.get(src))
        got = peers.receive_beacon(data, src, ttl, keyring=RING, vrid=51, allowed=None, own=frozenset({OWN}),
                                   now=100.0 + i * 1e-3, wall=WALL)
        assert isinstance(got, (PeerState, Refused))
        assert isinstance(got, PeerState) == want, (data, src, ttl, got)
        if isinstance(got, PeerState):
            believed += 1
            last_ts[src] = got.ts
    assert "internal_error" not in peers.refused
    assert believed > BEACON_CASES // 25
    print(f"\nbeacons: {BEACON_CASES} datagrams, {believed} believed, refused {dict(sorted(peers.refused.items()))}")


def test_beacon_mutants_through_the_real_daemon_loop():
    from havip.daemon.loop import Adapters, Daemon
    from tests.fakes import FakeAnnouncer, FakeLink, FakeSocket, FakeVips

    doc = {**vectors.conf("v2-auth-pass", "h1").havip_config(), "beacon": {"keys": [KEY.decode()]}}
    cfg = config.parse(doc, default_instance="fuzz")
    fb, clock = FakeBeacon(), FakeClock()
    ad = Adapters(make_socket=lambda: FakeSocket(), vips=FakeVips(), announcer=FakeAnnouncer(), link=FakeLink(),
                  make_beacon=lambda source: fb)
    d = Daemon(cfg, ad, log=structlog.get_logger(), clock=clock, wall=lambda: WALL)
    d.start()
    rng = random.Random(11)
    for i in range(2_000):
        fb.deliver(*_beacon_mutant(rng, i))
        if i % 30 == 29:
            d.run_once()
    for _ in range(3):
        d.run_once()
    st_ = d.status()
    assert st_["input_errors"] == {} and len(st_["peers"]) <= 2
    assert sum(st_["beacon"]["refused"].values()) > 1000


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([PEER, OWN, "198.18.0.99"]), st.sampled_from([255, 64, None]))
def test_any_datagram_is_refused_or_believed_never_raised(data, src, ttl):
    for payload in (data, MAGIC + hmac.new(KEY, MAGIC + data, hashlib.sha256).digest() + data):
        got = Peers().receive_beacon(payload, src, ttl, keyring=RING, vrid=51, allowed=None,
                                     own=frozenset({OWN}), now=1.0, wall=WALL)
        assert isinstance(got, (PeerState, Refused))
        assert got.reason != "internal_error" if isinstance(got, Refused) else True


def test_signed_beacons_round_trip_through_the_oracle():
    data = encode_beacon(INFO, keyring=RING, src=PEER, ts=WALL)
    assert _oracle_believes(data, PEER, 255, None)
