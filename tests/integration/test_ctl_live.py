"""havipctl against real daemons in namespaces: status tells the truth about the wire and
the interface; failover moves the VIP both ways; pause stops automatic failover; a user
who may not steer havip is refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from havip.lab.havipd import Havipd, holders, vrrp_config, wait_vip
from havip.lab.netns import wait_for

VIP = "198.18.0.50"


def ctl(sock: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "havip.ctl", "-s", sock, *args], capture_output=True, text=True,
                          timeout=timeout)


def status(d: Havipd) -> dict:
    res = ctl(d.config["control"]["socket"], "status", "--json")
    assert res.returncode in (0, 1), res.stderr
    return json.loads(res.stdout)


@pytest.fixture
def pair(topology, tmp_path):
    h1, h2 = topology.add_host("h1", 11), topology.add_host("h2", 21)
    d1 = Havipd(h1, vrrp_config(priority=110, vips=[f"{VIP}/24"]), tmp_path)
    d2 = Havipd(h2, vrrp_config(priority=91, vips=[f"{VIP}/24"]), tmp_path)
    d1.start()
    d2.start()
    d1.wait_state("master", timeout=15)
    d2.wait_state("backup", timeout=15)
    wait_for(lambda: status(d1).get("standby_peers"), 5, what="h1 hears h2's beacon")
    yield (h1, d1), (h2, d2)
    d1.kill()
    d2.kill()


def test_status_matches_the_wire_and_the_interface(pair):
    (h1, d1), (h2, d2) = pair
    s1, s2 = status(d1), status(d2)
    assert s1["state"] == "master" and s1["vip_attached"] is True and h1.has_address(VIP)
    assert s2["state"] == "backup" and s2["vip_attached"] is False and not h2.has_address(VIP)
    assert s2["master"]["address"] == h1.addr and s2["master"]["priority"] == 110
    assert s2["master"]["last_seen_seconds_ago"] < 2.5
    assert s1["priority"] == {"configured": 110, "effective": 110}
    assert s1["standby_peers"] == [h2.addr]
    assert {p["address"]: p["state"] for p in s2["peers"]} == {h1.addr: "master"}
    table = ctl(d2.config["control"]["socket"], "status")
    assert table.returncode == 0 and "backup" in table.stdout and h1.addr in table.stdout


def test_failover_both_ways(pair):
    (h1, d1), (h2, d2) = pair
    res = ctl(d1.config["control"]["socket"], "failover")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "switchover done" in res.stdout
    assert wait_vip([h1, h2], VIP, timeout=5) is h2
    time.sleep(4)                       # longer than master-down: h1 holds, no preempting back
    assert holders([h1, h2], VIP) == ["h2"]
    assert status(d1)["state"] == "backup"
    res = ctl(d1.config["control"]["socket"], "failover")
    assert res.returncode == 0, res.stdout + res.stderr
    assert wait_vip([h1, h2], VIP, timeout=5) is h1


def test_pause_stops_automatic_failover_and_shows_on_the_peer(pair):
    (h1, d1), (h2, d2) = pair
    assert ctl(d2.config["control"]["socket"], "pause").returncode == 0
    wait_for(lambda: any(p["paused"] for p in status(d1)["peers"]), 5, what="h1 sees h2 paused")
    d1.kill()                           # the master dies: a paused backup must not take over
    time.sleep(5)
    assert status(d2)["state"] == "backup" and not h2.has_address(VIP)
    assert ctl(d2.config["control"]["socket"], "resume").returncode == 0
    d2.wait_state("master", timeout=8, after=len(d2.transitions()))


# havipctl as `nobody`, wherever the clone and the interpreter live: Python starts as root
# and runs the same command once against a socket that does not exist, so that every module
# on that path is imported (the clone may sit in root's 0700 home, where `nobody` cannot
# read it), then drops to uid/gid 65534 and runs it for real: the refusal seen is the one a
# non-root user gets.
AS_NOBODY = """
import contextlib, io, os, sys
import havip.ctl
args = sys.argv[1:]
with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
    havip.ctl.main(["-s", "/nonexistent/havip.sock", *args[2:]], standalone_mode=False)
os.chdir("/")
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
os.environ["HOME"] = "/"
havip.ctl.main(args, prog_name="havipctl")
"""


def test_refusals_are_clear(pair, tmp_path):
    (h1, d1), (h2, d2) = pair
    res = ctl(str(tmp_path / "nope.sock"), "status")
    assert res.returncode == 3 and "not running" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run([sys.executable, "-c", AS_NOBODY, "-s", d1.config["control"]["socket"], "failover"],
                         capture_output=True, text=True, timeout=30, cwd="/")
    assert res.returncode != 0
    assert "permission denied" in res.stderr.lower(), res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert status(d1)["state"] == "master"


def test_metrics_endpoint_of_a_live_daemon(topology, tmp_path):
    h1 = topology.add_host("h1", 11)
    d = Havipd(h1, vrrp_config(priority=110, vips=[f"{VIP}/24"], metrics={"listen": "127.0.0.1:9405"}), tmp_path)
    try:
        d.start()
        d.wait_state("master", timeout=15)
        time.sleep(1.5)
        scrape = ("import urllib.request;"
                  "print(urllib.request.urlopen('http://127.0.0.1:9405/metrics', timeout=5).read().decode())")
        text = h1.run(sys.executable, "-c", scrape).stdout
        assert 'havip_state{havip_state="master"} 1.0' in text
        assert 'havip_transitions_total{from="backup",to="master"} 1.0' in text
        assert "havip_vip_attached 1.0" in text
        sent = next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("havip_adverts_sent_total"))
        assert sent >= 1
    finally:
        d.kill()
