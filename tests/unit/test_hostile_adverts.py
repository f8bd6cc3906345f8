"""Issue 9, findings 1 and 4: adverts that used to stop the daemon or flood its log.

The repro bytes are those of the issue. Each test fails on the code before the fix:
scapy raised MaximumItemsCount for 101-255 addresses, and in unicast mode the version
check (loud) ran before the peer check and remembered every source forever.
"""

from __future__ import annotations

import structlog

from havip import config
from havip.daemon.receive import Receiver
from havip.model import Advert, Drop
from havip.net.sock import Received
from havip.protocol import codec
from tests.fakes import FakeClock

V2_REPRO = bytes.fromhex("21636465010116d4") + bytes(404) + bytes.fromhex("3131313100000000")
V3_REPRO = bytes.fromhex("31636465000a4c06") + bytes(404)


def test_v2_advert_with_101_addresses_decodes_instead_of_raising():
    assert len(V2_REPRO) == 420
    result = codec.decode(V2_REPRO, src="198.18.0.99", dst="224.0.0.18", ttl=255, family=4)
    assert isinstance(result, Advert), result
    assert (result.version, result.vrid, result.priority) == (2, 0x63, 0x64)
    assert result.addresses == ("0.0.0.0",) * 101 and result.password == b"1111"


def _v3_for(src: str) -> bytes:
    """The v3 repro with its pseudo-header checksum computed for `src` (any source works)."""
    import ipaddress
    import struct

    from scapy.utils import checksum

    body = V3_REPRO[:6] + b"\0\0" + V3_REPRO[8:]
    pseudo = ipaddress.ip_address(src).packed + bytes([224, 0, 0, 18]) + struct.pack("!BBH", 0, 112, len(body))
    return body[:6] + checksum(pseudo + body).to_bytes(2, "big") + body[8:]


def test_v3_advert_with_101_addresses_decodes_from_any_source():
    # The bytes verify for 198.18.117.245; the same packet is built for others.
    assert _v3_for("198.18.117.245") == V3_REPRO
    for src in ("198.18.117.245", "198.18.0.99", "10.1.2.3"):
        result = codec.decode(_v3_for(src), src=src, dst="224.0.0.18", ttl=255, family=4)
        assert isinstance(result, Advert), result
        assert (result.version, result.vrid, len(result.addresses)) == (3, 0x63, 101)
        assert result.interval == 0.1


def test_255_addresses_the_most_the_count_field_holds():
    vips = tuple(f"198.18.1.{i}" for i in range(255))
    for version in (2, 3):
        adv = Advert(version, 51, 100, 1.0, vips, auth_type=1 if version == 2 else 0,
                     password=b"1111" if version == 2 else b"")
        raw = codec.encode(adv, src="198.18.0.21", dst="224.0.0.18")
        got = codec.decode(raw, src="198.18.0.21", dst="224.0.0.18", ttl=255, family=4)
        assert isinstance(got, Advert) and got.addresses == vips


def test_whole_packets_never_raise():
    from scapy.layers.inet import IP
    from scapy.packet import Raw

    for payload in (V2_REPRO, V3_REPRO):
        pkt = bytes(IP(src="198.18.117.245", dst="224.0.0.18", ttl=255, proto=112) / Raw(payload))
        assert isinstance(codec.decode_ipv4_packet(pkt), (Advert, Drop))


def _cfg(**over):
    base = {"interface": "eth0", "virtual_router_id": 51, "priority": 110, "advert_interval": 1,
            "authentication": {"type": "pass", "password": "1111"}, "virtual_ipaddresses": ["198.18.0.50/24"]}
    return config.parse({**base, **over}, default_instance="t")


def test_the_receiver_drops_the_repro_packets_quietly():
    with structlog.testing.capture_logs() as logs:
        r = Receiver(log=structlog.get_logger(), clock=FakeClock())
        cfg = _cfg()
        for payload in (V2_REPRO, _v3_for("198.18.0.99")):
            assert r.handle(Received(payload, "198.18.0.99", "224.0.0.18", 255), cfg, {"198.18.0.11"}) is None
    assert r.drops["other_vrid"] == 2        # VRID 99 is not ours: quiet, before the version
    assert not [e for e in logs if e["log_level"] in ("warning", "error", "critical")]


def advert(src: str, prio: int) -> bytes:
    """A valid v2 advert for the test config (VRID 51, password 1111) at `prio`."""
    return codec.encode(Advert(2, 51, prio, 1.0, ("198.18.0.50",), auth_type=1, password=b"1111"),
                        src=src, dst="224.0.0.18")


# VRRPv3 with the message-only checksum (RFC 9568) is valid from any source: encoded once.
BAD_VERSION = codec.encode(Advert(3, 51, 200, 1.0, ("198.18.0.50",)), src="198.18.0.21", dst="198.18.0.11",
                           checksum="message")


def test_unicast_non_peers_are_dropped_before_the_loud_version_check():
    """Finding 4: 10,000 sources -> 10,000 warning lines and dict entries before the fix."""
    cfg = _cfg(unicast={"source": "198.18.0.11", "peers": ["198.18.0.21"]})
    r = Receiver(log=structlog.get_logger(), clock=FakeClock())
    with structlog.testing.capture_logs() as logs:
        for i in range(10_000):
            src = f"198.18.{100 + i // 250}.{1 + i % 250}"
            r.handle(Received(BAD_VERSION, src, "198.18.0.11", 64), cfg, {"198.18.0.11"})
    assert r.drops == {"not_a_peer": 10_000}
    assert not [e for e in logs if e["log_level"] == "warning"]
    assert len(r.limiter) == 0


def test_loud_drops_are_bounded_per_source_and_overall():
    """Multicast: anyone on the link may send; warnings and memory stay bounded."""
    cfg = _cfg()
    clock = FakeClock()
    r = Receiver(log=structlog.get_logger(), clock=clock)
    raw = codec.encode(Advert(2, 51, 200, 1.0, ("198.18.0.50",), auth_type=1, password=b"nope"),
                       src="198.18.0.21", dst="224.0.0.18")      # v2: the checksum does not cover the source
    with structlog.testing.capture_logs() as logs:
        for i in range(10_000):
            src = f"198.18.{100 + i // 250}.{1 + i % 250}"
            r.handle(Received(raw, src, "224.0.0.18", 255), cfg, {"198.18.0.11"})
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert r.drops == {"auth_mismatch": 10_000}
    assert 1 <= len(warnings) <= r.limiter.burst + 1         # + the one "suppressed" summary
    assert len(r.limiter) <= r.limiter.max_keys


def test_a_strangers_low_advert_does_not_become_the_master_a_backup_reports():
    """Seen in the lab flood: a valid priority-45 advert from a third host replaced the real
    master in a backup's status and in its takeover reason."""
    from tests.unit.test_daemon import make

    d, sock, vips, link, clock, rt = make()
    d.start()

    sock.deliver(advert("198.18.0.21", 200), "198.18.0.21")
    d.run_once()
    sock.deliver(advert("198.18.0.99", 45), "198.18.0.99")
    d.run_once()
    assert d.status()["master"]["address"] == "198.18.0.21"
    # Its own priority falling below ours is still seen (and preempted after the timer).
    sock.deliver(advert("198.18.0.21", 50), "198.18.0.21")
    d.run_once()
    assert d.status()["master"]["priority"] == 50


def test_a_backup_reads_the_whole_queue_before_it_takes_over():
    """Seen in the lab flood at VRRPv3 0.1 s: the master's advert waited in the socket behind
    flood packets while the backup, reading 64 a turn, let its master-down timer fire."""
    from havip.model import State
    from tests.unit.test_daemon import make

    d, sock, vips, link, clock, rt = make()
    d.start()

    sock.deliver(advert("198.18.0.21", 200), "198.18.0.21")
    d.run_once()
    assert d.machine.state == State.BACKUP
    clock.advance(3.0)                               # the master's next adverts are queued ...
    for _ in range(500):
        sock.deliver(b"\x21\x63\x01", "198.18.0.99")  # ... behind a flood
    sock.deliver(advert("198.18.0.21", 200), "198.18.0.21")
    clock.advance(0.7)                               # master-down (3 x 1 s + skew) is now due
    d.run_once()
    assert d.machine.state == State.BACKUP, d.machine.reason
    assert d.drops["truncated"] == 500
