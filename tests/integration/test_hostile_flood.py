"""Issue 9 end to end: a third host floods a running havip pair with the repro packets,
fuzzed adverts and forged beacons. Zero crashes, zero transitions, the VIP where it
was, every drop counted by reason in the Prometheus metrics (scraped).

Real namespaces, the real daemons (`havip run`), VRRPv2 at 1 s and VRRPv3 at 0.1 s.
`make test` sends HAVIP_FUZZ_PACKETS (default 100,000, as issue 9 asks) adverts and as many
beacons per timer (about 50 s a timer here); `make fuzz` runs the same with the unit fuzzers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from havip.lab.havipd import Havipd, holders, vrrp_config
from havip.model import Advert
from havip.protocol import codec

VIP = "198.18.0.50"
GROUP = "224.0.0.18"
FLOOD = Path(__file__).with_name("flood.py")
PACKETS = int(os.environ.get("HAVIP_FUZZ_PACKETS", "100000"))   # the 100,000 per timer
RATE = float(os.environ.get("HAVIP_FUZZ_RATE", "4000"))
SCRAPE = ("import urllib.request,sys;"
          "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9405/metrics',timeout=5).read().decode())")


def _metrics(host) -> dict[str, float]:
    text = host.run(sys.executable, "-c", SCRAPE, timeout=20).stdout
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(havip_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def _status(d: Havipd) -> dict:
    res = subprocess.run([sys.executable, "-m", "havip.ctl", "-s", d.config["control"]["socket"], "status",
                          "--json"], capture_output=True, text=True, timeout=30)
    return json.loads(res.stdout)


def _by_reason(metrics: dict[str, float], name: str) -> dict[str, float]:
    return {re.search(r'reason="([^"]+)"', k).group(1): v for k, v in metrics.items()
            if k.startswith(name + "{") and "reason=" in k}


@pytest.mark.parametrize("version, interval", [(2, 1.0), (3, 0.1)], ids=["v2-1s", "v3-0.1s"])
def test_flood_from_a_third_host_changes_nothing(topology, tmp_path, version, interval):
    h1 = topology.add_host("h1", 11)
    h2 = topology.add_host("h2", 21)
    evil = topology.add_host("evil", 99)
    # The loop thread at a real-time priority (realtime_priority, keepalived's vrrp_rt_priority)
    # for both timers: at VRRPv3 0.1 s a master stalled for 0.27 s by unrelated busy processes
    # on a shared 2-core machine loses mastership, flood or not. What is tested here is
    # havip's handling of the packets.
    extra = {"metrics": {"listen": "127.0.0.1:9405"}, "realtime_priority": 10}
    d1 = Havipd(h1, vrrp_config(priority=110, vips=[f"{VIP}/24"], version=version, interval=interval, **extra),
                tmp_path)
    d2 = Havipd(h2, vrrp_config(priority=91, vips=[f"{VIP}/24"], version=version, interval=interval, **extra),
                tmp_path)
    try:
        d1.start()
        d2.start()
        d1.wait_state("master", timeout=20)
        d2.wait_state("backup", timeout=20)
        # Both hear each other's signed beacon before the flood: the flood must not change that.
        d1.wait_event(lambda e: e.get("event") == "beacon_on", timeout=10, what="beacon on")
        n1, n2 = len(d1.transitions()), len(d2.transitions())
        good = codec.encode(Advert(version=version, vrid=51, priority=100, interval=interval, addresses=(VIP,),
                                   auth_type=1 if version == 2 else 0, password=b"1111" if version == 2 else b""),
                            src=evil.addr, dst=GROUP)
        before = [_metrics(h) for h in (h1, h2)]
        res = evil.run("nice", "-n", "10", sys.executable, str(FLOOD), "--iface", "eth0", "--src", evil.addr,
                       "--spoof", f"{h2.addr}", "--peers", f"{h1.addr},{h2.addr}", "--advert", good.hex(),
                       "--version", str(version), "--vrid", "51", "--adverts", str(PACKETS),
                       "--beacons", str(PACKETS), "--rate", str(RATE), "--seed", str(version),
                       timeout=60 + 4 * PACKETS / RATE)
        sent = json.loads(res.stdout.strip().splitlines()[-1])
        assert sent["adverts"] == PACKETS and sent["beacons"] == PACKETS and sent["repro"] == 100
        after = [_metrics(h) for h in (h1, h2)]

        assert d1.running and d2.running, "a daemon died under the flood"
        assert d1.transitions()[n1:] == [] and d2.transitions()[n2:] == [], "the flood changed the election"
        assert holders([h1, h2], VIP) == ["h1"]
        report = {"sent": sent, "loadavg": os.getloadavg()}
        for name, b, a in (("h1", before[0], after[0]), ("h2", before[1], after[1])):
            drops = {r: a.get(f'havip_drops_total{{reason="{r}"}}', 0) - v for r, v in _by_reason(b, "havip_drops_total").items()}
            drops.update({r: v for r, v in _by_reason(a, "havip_drops_total").items() if r not in drops})
            beacon = _by_reason(a, "havip_beacon_drops_total")
            errors = {k: v for k, v in a.items() if k.startswith("havip_input_errors_total")}
            assert not any(errors.values()), f"{name}: input errors {errors}"
            assert drops.get("malformed", 0) == 0 and drops.get("internal_error", 0) == 0
            for reason in ("bad_ttl", "bad_checksum", "other_vrid", "truncated", "bad_addr_count"):
                assert drops.get(reason, 0) > 0, f"{name}: no {reason} drop counted in {drops}"
            assert beacon.get("bad_mac", 0) > 0 and beacon.get("bad_ttl", 0) > 0, f"{name}: beacon drops {beacon}"
            received = a.get("havip_adverts_received_total", 0) - b.get("havip_adverts_received_total", 0)
            report[name] = {"adverts_received": received, "drops": drops, "beacon_drops": beacon}
        # The pair's own beacons are still believed; none of the flood's: h1 sees h2 only.
        st = _status(d1)
        assert st["standby_peers"] == [h2.addr] and [p["address"] for p in st["peers"]] == [h2.addr]
        assert st["beacon"]["auth"] == "hmac-sha256"
        assert st["scheduling"]["policy"] == "SCHED_RR", st["scheduling"]
        print(f"\nflood {version}/{interval}s: {json.dumps(report, sort_keys=True)}")
        (tmp_path / "flood-report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
        # And the pair still works afterwards.
        d1.stop()
        d2.wait_state("master", timeout=10, after=n2)
    finally:
        d1.kill()
        d2.kill()
