"""Malformed and hostile adverts change nothing: each is dropped with a named reason.

Every crafted packet below would make a host step down or take over if it were
accepted (priority 254 against our 110, or priority 0 to a backup).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from scapy.layers.inet import IP
from scapy.packet import Raw

from havip.lab.havipd import Havipd, holders, vrrp_config, wait_vip
from havip.model import Advert
from havip.protocol import codec

VIP = "198.18.0.50"
GROUP = "224.0.0.18"
SENDRAW = Path(__file__).with_name("sendraw.py")


def _advert(src: str, *, priority: int, password: bytes = b"1111", vrid: int = 51, interval: float = 1) -> bytes:
    adv = Advert(version=2, vrid=vrid, priority=priority, interval=interval, addresses=(VIP,),
                 auth_type=1, password=password)
    return codec.encode(adv, src=src, dst=GROUP)


def _ip(src: str, payload: bytes, *, ttl: int = 255) -> bytes:
    return bytes(IP(src=src, dst=GROUP, ttl=ttl, proto=112) / Raw(payload))


def _hostile_packets(src: str) -> dict[str, list[bytes]]:
    good = _advert(src, priority=254)
    bad_sum = bytearray(good)
    bad_sum[6] ^= 0xFF
    rng = random.Random(1234)
    return {
        "bad_ttl": [_ip(src, good, ttl=64), _ip(src, _advert(src, priority=0), ttl=1)],
        "bad_checksum": [_ip(src, bytes(bad_sum))],
        "auth_mismatch": [_ip(src, _advert(src, priority=254, password=b"guess"))],
        "truncated": [_ip(src, good[:n]) for n in (0, 1, 7, 8, 11)],
        "interval_mismatch": [_ip(src, _advert(src, priority=254, interval=3))],
        "other_vrid": [_ip(src, _advert(src, priority=254, vrid=99))],
        "random": [_ip(src, rng.randbytes(rng.randint(1, 60))) for _ in range(30)],
    }


def test_hostile_adverts_change_nothing(topology, tmp_path):
    h1 = topology.add_host("h1", 11)
    h2 = topology.add_host("h2", 21)
    evil = topology.add_host("evil", 99)
    d1 = Havipd(h1, vrrp_config(priority=110, vips=[f"{VIP}/24"]), tmp_path)
    d2 = Havipd(h2, vrrp_config(priority=91, vips=[f"{VIP}/24"]), tmp_path)
    try:
        d1.start()
        d2.start()
        d1.wait_state("master", timeout=15)
        d2.wait_state("backup", timeout=15)
        n1, n2 = len(d1.transitions()), len(d2.transitions())
        packets = _hostile_packets(evil.addr)
        flat = [p.hex() for group in packets.values() for p in group]
        # Keep it up for longer than a master-down interval.
        for _ in range(5):
            evil.run(sys.executable, str(SENDRAW), "eth0", *flat)
            time.sleep(1)
        assert d1.running and d2.running, "a daemon died on hostile input"
        assert d1.transitions()[n1:] == [] and d2.transitions()[n2:] == []
        assert holders([h1, h2], VIP) == ["h1"]
        for d in (d1, d2):
            reasons = {e.get("reason") for e in d.events() if e.get("event") == "advert_dropped"}
            for expected in ("bad_ttl", "bad_checksum", "auth_mismatch", "truncated", "interval_mismatch",
                             "other_vrid"):
                assert expected in reasons, f"{d.name}: no {expected} drop in {sorted(reasons)}"
        # And the pair still works afterwards.
        d1.stop()
        d2.wait_state("master", timeout=5, after=n2)
        assert wait_vip([h1, h2], VIP) is h2
    finally:
        d1.kill()
        d2.kill()
