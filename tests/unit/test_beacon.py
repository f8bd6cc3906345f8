"""The peer beacon (issue 9, findings 2 and 3): signed, strictly parsed, from peers only,
never raising, bounded; a forged beacon cannot make `havipctl failover` go ahead.

Each repro of the issue is here. On the code before the fix, decode raised
RecursionError for ~1,000 `[` and KeyError for a beacon without `healthy`; any
datagram from anyone was believed, so a forged "backup, healthy" made a master's
failover proceed; the table was never pruned and an instance name could hold a newline.
"""

from __future__ import annotations

import json

import pytest
import structlog
from hypothesis import given, settings, strategies as st

from havip import config
from havip.daemon.loop import Adapters, Daemon
from havip.daemon.peers import MAX_PEERS, Peers
from havip.model import State
from havip.protocol.beacon import MAGIC, Keyring, PeerState, Refused, decode, encode
from tests.fakes import FakeAnnouncer, FakeBeacon, FakeClock, FakeLink, FakeSocket, FakeVips

KEY = b"k" * 32
RING = Keyring([KEY])
H1, H2, EVIL = "198.18.0.11", "198.18.0.21", "198.18.0.99"
INFO = {"instance": "backup", "vrid": 51, "state": "backup", "priority": 91, "healthy": True,
        "paused": False, "container": "stopped"}
NOW = 1_800_000_000.0


def _signed_body(body: bytes, key: bytes = KEY) -> bytes:
    return MAGIC + Keyring([key]).sign(MAGIC + body) + body


def _accept(peers: Peers, data: bytes, src: str = H2, *, ttl=255, allowed=None, wall=NOW, now=100.0):
    return peers.receive_beacon(data, src, ttl, keyring=RING, vrid=51, allowed=allowed,
                                own=frozenset({H1}), now=now, wall=wall)


# ---------------------------------------------------------------- the codec


def test_round_trip():
    got = decode(encode(INFO, keyring=RING, src=H2, ts=NOW), RING)
    assert got == PeerState(src=H2, ts=NOW, **INFO)


def test_health_unknown_and_no_container_are_fine():
    got = decode(encode({**INFO, "healthy": None, "container": None}, keyring=RING, src=H2, ts=NOW), RING)
    assert isinstance(got, PeerState) and got.healthy is None and got.container is None


def test_issue_repro_deep_nesting_is_refused_not_raised():
    for body in (b"[" * 1000, b"{" * 1000, b'{"a":' * 200):
        assert decode(MAGIC + bytes(32) + body, RING).reason in ("bad_mac", "too_big")
        # Even correctly signed (a peer running other code), nesting never reaches json.
        signed = _signed_body(body[:400])
        assert decode(signed, RING).reason == "malformed"


def test_issue_repro_missing_keys_is_refused_not_raised():
    body = b'{"havip":1,"instance":"a","vrid":51,"state":"backup","priority":1,"paused":false}'
    assert decode(body, RING).reason == "not_a_beacon"          # the old format: unsigned
    assert decode(_signed_body(body), RING).reason == "bad_field"


@pytest.mark.parametrize("change, reason", [
    ({"instance": "a\nstate: master"}, "bad_field"),            # a newline forging a status line
    ({"instance": "x" * 65}, "bad_field"),
    ({"vrid": "51"}, "bad_field"), ({"vrid": 0}, "bad_field"), ({"priority": True}, "bad_field"),
    ({"priority": 256}, "bad_field"), ({"state": "boss"}, "bad_field"), ({"healthy": 1}, "bad_field"),
    ({"container": "exploded"}, "bad_field"), ({"extra": 1}, "bad_field"), ({"ts": -1}, "bad_field"),
])
def test_strict_schema(change, reason):
    body = json.dumps({"from": H2, "ts": NOW, **INFO, **change}, separators=(",", ":")).encode()
    assert decode(_signed_body(body), RING).reason == reason


def test_constants_duplicates_and_non_ascii_are_refused():
    base = json.dumps({"from": H2, "ts": NOW, **INFO}, separators=(",", ":"))
    for body in (base.replace(str(NOW), "NaN"), base.replace(str(NOW), "1e999"),
                 base[:-1] + ',"vrid":52}', base.replace("backup", "b\u00e4ckup", 1),
                 base.replace('"backup"', '"b\nackup"', 1)):
        got = decode(_signed_body(body.encode()), RING)
        assert isinstance(got, Refused), body


def test_size_is_checked_before_anything_else():
    assert decode(b"HVB2" + bytes(5000), RING).reason == "too_big"


def test_wrong_key_is_refused():
    other = Keyring([b"o" * 32])
    assert decode(encode(INFO, keyring=other, src=H2, ts=NOW), RING).reason == "bad_mac"


def test_rolling_a_key_never_leaves_two_hosts_disagreeing():
    old, new = b"o" * 32, b"n" * 32
    steps = [[old], [old, new], [new, old], [new]]     # docs/operations.md: both hosts step by step
    for a, b in zip(steps, steps[1:]):
        for sender, receiver in ((a, b), (b, a)):
            got = decode(encode(INFO, keyring=Keyring(sender), src=H2, ts=NOW), Keyring(receiver))
            assert isinstance(got, PeerState), (sender, receiver)


def test_keyring_refuses_short_or_too_many_keys():
    with pytest.raises(ValueError):
        Keyring([b"short"])
    with pytest.raises(ValueError):
        Keyring([])
    with pytest.raises(ValueError):
        Keyring([KEY] * 9)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_random_bytes_never_raise(data):
    for payload in (data, MAGIC + data, _signed_body(data[:400])):
        assert isinstance(decode(payload, RING), (PeerState, Refused))


# ---------------------------------------------------------------- who is believed


def test_only_allowed_sources_recent_and_new_beacons_are_believed():
    peers = Peers()
    beacon = encode(INFO, keyring=RING, src=H2, ts=NOW)
    assert _accept(peers, beacon, EVIL, allowed=frozenset({H2})).reason == "not_a_peer"   # unicast stranger
    assert _accept(peers, beacon, H2, ttl=64).reason == "bad_ttl"                         # off-link
    assert _accept(peers, beacon, EVIL).reason == "not_a_peer"          # replayed from another address
    assert _accept(peers, beacon, H1).reason == "own"
    assert _accept(peers, beacon, H2, wall=NOW + 31).reason == "stale"
    assert isinstance(_accept(peers, beacon, H2), PeerState)
    assert _accept(peers, beacon, H2).reason == "replayed"
    other_vrid = encode({**INFO, "vrid": 52}, keyring=RING, src=H2, ts=NOW + 1)
    assert _accept(peers, other_vrid, H2).reason == "other_vrid"
    assert peers.standby(100.5) == [H2]
    assert peers.standby(100.0 + 3.6) == []                              # no longer fresh


def test_the_peer_table_is_bounded_and_forgets():
    peers = Peers()
    for i in range(1300):
        src = f"198.18.{1 + i // 250}.{1 + i % 250}"
        info = {**INFO, "instance": "x" * 64}
        assert isinstance(_accept(peers, encode(info, keyring=RING, src=src, ts=NOW), src, now=100.0 + i / 100),
                          PeerState)
        peers.heard_advert(src, 100.0 + i / 100)
    view = peers.view(113.0)
    assert len(view["peers"]) == MAX_PEERS and len(json.dumps(view)) < 16 * 1024
    assert peers.view(113.0 + 61)["peers"] == []


# ---------------------------------------------------------------- in the daemon


BASE = {"interface": "eth0", "virtual_router_id": 51, "priority": 110, "advert_interval": 1,
        "authentication": {"type": "pass", "password": "1111"}, "virtual_ipaddresses": ["198.18.0.50/24"]}


def _daemon(beacon_cfg: dict | None):
    data = {**BASE, **({"beacon": beacon_cfg} if beacon_cfg is not None else {})}
    cfg = config.parse(data, default_instance="t")
    sock, link, clock, fb = FakeSocket(), FakeLink(), FakeClock(), FakeBeacon()
    made = []

    def make_beacon(source):
        made.append(source)
        return fb

    ad = Adapters(make_socket=lambda: sock, vips=FakeVips(), announcer=FakeAnnouncer(), link=link,
                  make_beacon=make_beacon)
    d = Daemon(cfg, ad, log=structlog.get_logger("t"), clock=clock, wall=lambda: NOW)
    return d, fb, clock, made


def _master(d, clock):
    d.start()
    clock.advance(3.7)
    d.run_once()
    assert d.machine.state == State.MASTER


def test_without_a_key_the_beacon_is_off_and_status_says_why():
    with structlog.testing.capture_logs() as logs:
        d, fb, clock, made = _daemon(None)
        _master(d, clock)
    assert made == [] and d.beacon is None
    st = d.status()
    assert st["beacon"]["auth"] == "off" and "no beacon key" in st["beacon"]["warning"]
    assert any(e["event"] == "beacon_off" and e["log_level"] == "warning" for e in logs)


def test_a_forged_beacon_does_not_vouch_for_a_standby():
    """Finding 3: a "backup, healthy" beacon from a non-peer made a master's failover go ahead."""
    d, fb, clock, made = _daemon({"keys": [KEY.decode()]})
    _master(d, clock)
    assert made == [H1]                                  # sent from our VRRP source address
    forged = [
        b'{"havip":1,"instance":"b","vrid":51,"state":"backup","priority":1,"healthy":true,"paused":false,'
        b'"container":"stopped"}',                                        # the old, unsigned format
        encode(INFO, keyring=Keyring([b"guessed-key-guessed-key"]), src=EVIL, ts=NOW),
        MAGIC + bytes(32) + json.dumps({"from": EVIL, "ts": NOW, **INFO}).encode(),
    ]
    for data in forged:
        fb.deliver(data, EVIL)
    d.run_once()
    st = d.status()
    assert st["standby_peers"] == [] and st["peers"] == []
    assert sum(st["beacon"]["refused"].values()) == 3
    from havip.control.server import _no_peer_refusal
    assert _no_peer_refusal(st) is not None              # failover without --force is refused
    # The real peer's beacon does vouch.
    fb.deliver(encode(INFO, keyring=RING, src=H2, ts=NOW), H2)
    d.run_once()
    assert d.status()["standby_peers"] == [H2]
    assert _no_peer_refusal(d.status()) is None


def test_the_daemon_sends_signed_increasing_beacons():
    d, fb, clock, made = _daemon({"keys": [KEY.decode()]})
    _master(d, clock)
    clock.advance(1.1)
    d.run_once()
    got = [decode(b, RING) for b in fb.sent]
    assert len(got) >= 2 and all(isinstance(g, PeerState) and g.src == H1 for g in got)
    assert all(a.ts < b.ts for a, b in zip(got, got[1:]))          # the wall clock did not move


def test_a_datagram_that_makes_the_table_raise_is_counted_not_fatal():
    d, fb, clock, made = _daemon({"keys": [KEY.decode()]})
    _master(d, clock)

    class Broken(Peers):
        def receive_beacon(self, *a, **k):
            raise RecursionError("deep")

    d.beacons.peers = Broken()
    fb.deliver(b"[" * 1000, EVIL)
    d.run_once()
    assert d.machine.state == State.MASTER and d.input_errors["beacon"] == 1


def test_key_file_one_key_per_line(tmp_path):
    from havip.net.beacon import load_keyring
    from havip.errors import AdapterError

    f = tmp_path / "beacon.key"
    f.write_text("# rolled 2026-11\n" + "n" * 32 + "\n\n" + "o" * 32 + "\n")
    cfg = config.parse({**BASE, "beacon": {"key_file": str(f)}}, default_instance="t")
    ring = load_keyring(cfg.beacon)
    assert ring.keys == (b"n" * 32, b"o" * 32)
    f.write_text("short\n")
    with pytest.raises(AdapterError, match="at least 16"):
        load_keyring(cfg.beacon)
    cfg = config.parse({**BASE, "beacon": {"key_file": str(tmp_path / "missing")}}, default_instance="t")
    with pytest.raises(AdapterError, match="cannot read"):
        load_keyring(cfg.beacon)


def test_reload_rolls_the_keys_and_turns_the_beacon_on_and_off():
    d, fb, clock, made = _daemon(None)
    _master(d, clock)
    assert d.beacon is None
    on = config.parse({**BASE, "beacon": {"keys": ["n" * 32, KEY.decode()]}}, default_instance="t")
    d.apply_config(on)
    assert d.beacon is fb and d.beacons.keyring.keys == (b"n" * 32, KEY)
    fb.deliver(encode(INFO, keyring=RING, src=H2, ts=NOW), H2)       # the peer still signs with the old key
    clock.advance(0.1)
    d.run_once()
    assert d.status()["standby_peers"] == [H2]
    assert decode(fb.sent[-1], Keyring([b"n" * 32])).src == H1          # we sign with the new one
    d.apply_config(config.parse(BASE, default_instance="t"))
    assert d.beacon is None and fb.closed and d.status()["beacon"]["auth"] == "off"


def test_reload_with_an_unreadable_key_file_keeps_the_running_keys(tmp_path):
    f = tmp_path / "beacon.key"
    f.write_text(KEY.decode() + "\n")
    d, fb, clock, made = _daemon({"key_file": str(f)})
    _master(d, clock)
    f.unlink()
    with structlog.testing.capture_logs() as logs:
        d.apply_config(config.parse({**BASE, "beacon": {"key_file": str(f)}, "priority": 120},
                                    default_instance="t"))
    assert d.beacons.keyring.keys == (KEY,) and d.beacon is fb
    assert any(e["event"] == "beacon_keys_kept" for e in logs)
