"""havip hosts in network namespaces: election, failover, preemption, stale VIPs.

Real kernel, real raw sockets, real netlink; no Milvus here (tests/e2e has it).
"""

from __future__ import annotations

import time

import pytest

from havip.lab.havipd import Havipd, holders, vrrp_config, wait_vip
from havip.lab.netns import wait_for

VIP = "198.18.0.50"
VIP_CIDR = f"{VIP}/24"


@pytest.fixture
def pair(topology, tmp_path):
    """Two hosts with havip (priorities 110 and 91), not started."""
    h1 = topology.add_host("h1", 11)
    h2 = topology.add_host("h2", 21)
    d1 = Havipd(h1, vrrp_config(priority=110, vips=[VIP_CIDR]), tmp_path)
    d2 = Havipd(h2, vrrp_config(priority=91, vips=[VIP_CIDR]), tmp_path)
    yield topology, (h1, d1), (h2, d2)
    for d in (d1, d2):
        d.kill()


def test_two_hosts_elect_exactly_one_master(pair):
    topo, (h1, d1), (h2, d2) = pair
    d1.start()
    d2.start()
    d1.wait_state("master", timeout=15)
    d2.wait_state("backup", timeout=15)
    assert wait_vip([h1, h2], VIP) is h1
    # Steady state: nothing changes over several advert intervals.
    time.sleep(3)
    assert holders([h1, h2], VIP) == ["h1"]
    assert d2.state() == "backup" and d1.state() == "master"


def test_three_hosts_elect_exactly_one_master(topology, tmp_path):
    hosts = [topology.add_host(f"h{i}", 10 + i) for i in (1, 2, 3)]
    ds = [Havipd(h, vrrp_config(priority=p, vips=[VIP_CIDR]), tmp_path) for h, p in zip(hosts, (100, 120, 90))]
    try:
        for d in ds:
            d.start()
        ds[1].wait_state("master", timeout=15)
        assert wait_vip(hosts, VIP) is hosts[1]
        time.sleep(2.5)
        assert holders(hosts, VIP) == ["h2"]
        assert [d.state() for d in ds] == ["backup", "master", "backup"]
    finally:
        for d in ds:
            d.kill()


def test_sigterm_hands_over_after_skew_time(pair):
    topo, (h1, d1), (h2, d2) = pair
    d1.start()
    d1.wait_state("master", timeout=15)
    d2.start()
    d2.wait_state("backup", timeout=15)
    n = len(d2.transitions())
    assert d1.stop() == 0
    t = d2.wait_state("master", timeout=5, after=n)
    assert "resigned (priority 0)" in t["reason"]
    assert wait_vip([h1, h2], VIP) is h2
    assert not h1.has_address(VIP)


def test_link_cut_moves_vip_and_preempt_brings_it_back(pair):
    topo, (h1, d1), (h2, d2) = pair
    d1.start()
    d2.start()
    d1.wait_state("master", timeout=15)
    d2.wait_state("backup", timeout=15)
    n1, n2 = len(d1.transitions()), len(d2.transitions())
    h1.link_down()                       # cable pulled: h1 sees no carrier
    t = d2.wait_state("master", timeout=8, after=n2)
    assert "silent" in t["reason"]
    d1.wait_state("fault", timeout=5, after=n1)
    assert not h1.has_address(VIP)       # a host without a link gives up the VIP
    assert wait_vip([h1, h2], VIP) is h2
    h1.link_up()
    # h1 comes back as backup, sees h2's lower priority and preempts.
    t = d1.wait_state("master", timeout=10, after=n1 + 1)
    assert "preempting" in t["reason"]
    d2.wait_state("backup", timeout=5, after=n2 + 1)
    assert wait_vip([h1, h2], VIP) is h1


def test_isolated_master_split_then_heals(pair):
    """Switch port failure: h1 keeps its carrier but is alone. h2 takes over; when the
    port returns, the two masters see each other and the lower priority yields."""
    topo, (h1, d1), (h2, d2) = pair
    d1.start()
    d2.start()
    d1.wait_state("master", timeout=15)
    d2.wait_state("backup", timeout=15)
    n2 = len(d2.transitions())
    h1.cut()
    d2.wait_state("master", timeout=8, after=n2)
    h1.restore()
    t = d2.wait_state("backup", timeout=5, after=n2 + 1)
    assert "above ours" in t["reason"]
    assert wait_vip([h1, h2], VIP) is h1


def test_nopreempt_keeps_the_new_master(topology, tmp_path):
    h1 = topology.add_host("h1", 11)
    h2 = topology.add_host("h2", 21)
    d1 = Havipd(h1, vrrp_config(priority=110, vips=[VIP_CIDR], preempt=False), tmp_path)
    d2 = Havipd(h2, vrrp_config(priority=91, vips=[VIP_CIDR], preempt=False), tmp_path)
    try:
        d2.start()
        d2.wait_state("master", timeout=15)
        d1.start()
        d1.wait_state("backup", timeout=10)
        time.sleep(4.5)                   # longer than h1's master-down interval
        assert d1.state() == "backup"
        assert holders([h1, h2], VIP) == ["h2"]
    finally:
        d1.kill()
        d2.kill()


def test_stale_vip_after_sigkill_is_removed_on_restart(pair):
    topo, (h1, d1), (h2, d2) = pair
    d1.start()
    d1.wait_state("master", timeout=15)
    assert wait_vip([h1], VIP) is h1
    d1.kill()
    assert h1.has_address(VIP)           # a crash leaves the VIP behind
    d2.start()
    d2.wait_state("master", timeout=15)
    # Restart h1 with a lower priority than h2 so it stays backup: its VIP must go.
    d1.config["priority"] = 50
    d1.start()
    d1.wait_state("backup", timeout=10, after=len(d1.transitions()))
    wait_for(lambda: not h1.has_address(VIP), 5, what="stale VIP removed")
    assert holders([h1, h2], VIP) == ["h2"]


def test_cleanup_command_removes_the_vip(pair):
    topo, (h1, d1), (h2, d2) = pair
    d1.start()
    d1.wait_state("master", timeout=15)
    d1.kill()
    assert h1.has_address(VIP)
    res = d1.cleanup()
    assert res.returncode == 0, res.stderr
    assert "198.18.0.50/24" in res.stdout
    assert "resigned: priority-0 advert sent" in res.stdout
    assert not h1.has_address(VIP)


def test_unicast_mode(topology, tmp_path):
    h1 = topology.add_host("h1", 11)
    h2 = topology.add_host("h2", 21)
    h3 = topology.add_host("h3", 31)     # not a peer: its adverts must be ignored
    uni = lambda src, peer: {"source": src, "peers": [peer]}  # noqa: E731
    d1 = Havipd(h1, vrrp_config(vrid=52, priority=110, vips=[VIP_CIDR], unicast=uni(h1.addr, h2.addr)), tmp_path)
    d2 = Havipd(h2, vrrp_config(vrid=52, priority=91, vips=[VIP_CIDR], unicast=uni(h2.addr, h1.addr)), tmp_path)
    d3 = Havipd(h3, vrrp_config(vrid=52, priority=200, vips=["198.18.0.51/24"], unicast=uni(h3.addr, h2.addr)),
                tmp_path)
    try:
        d1.start()
        d2.start()
        d1.wait_state("master", timeout=15)
        d2.wait_state("backup", timeout=15)
        d3.start()
        d3.wait_state("master", timeout=15)   # h3 hears nobody and is master of nothing shared
        time.sleep(2)
        assert d2.state() == "backup"
        assert holders([h1, h2], VIP) == ["h1"]
        d2.wait_event(lambda e: e.get("event") == "advert_dropped" and e.get("reason") == "not_a_peer",
                      timeout=5, what="h3's adverts dropped as not a peer")
        n = len(d2.transitions())
        d1.stop()
        d2.wait_state("master", timeout=5, after=n)
        assert wait_vip([h1, h2], VIP) is h2
    finally:
        for d in (d1, d2, d3):
            d.kill()


def test_vrrp_v3_fast_adverts(topology, tmp_path):
    h1 = topology.add_host("h1", 11)
    h2 = topology.add_host("h2", 21)
    d1 = Havipd(h1, vrrp_config(priority=110, vips=[VIP_CIDR], version=3, interval=0.1), tmp_path)
    d2 = Havipd(h2, vrrp_config(priority=91, vips=[VIP_CIDR], version=3, interval=0.1), tmp_path)
    try:
        d1.start()
        d2.start()
        d1.wait_state("master", timeout=10)
        d2.wait_state("backup", timeout=10)
        time.sleep(1)
        assert d2.state() == "backup"
        n = len(d2.transitions())
        h1.link_down()
        t0 = time.monotonic()
        d2.wait_state("master", timeout=3, after=n)
        assert time.monotonic() - t0 < 1.5   # master-down is ~0.36 s; generous for a noisy machine
        assert wait_vip([h1, h2], VIP) is h2
    finally:
        d1.kill()
        d2.kill()


def test_vrrp_v3_ipv6(topology, tmp_path):
    h1 = topology.add_host("h1", 11)
    h2 = topology.add_host("h2", 21)
    vip6 = "fd00:198:18::50"
    d1 = Havipd(h1, vrrp_config(vrid=53, priority=110, vips=[f"{vip6}/64"], version=3, interval=0.5), tmp_path)
    d2 = Havipd(h2, vrrp_config(vrid=53, priority=91, vips=[f"{vip6}/64"], version=3, interval=0.5), tmp_path)
    try:
        d1.start()
        d2.start()
        d1.wait_state("master", timeout=10)
        d2.wait_state("backup", timeout=10)
        assert wait_vip([h1, h2], vip6) is h1
        n = len(d2.transitions())
        d1.stop()
        d2.wait_state("master", timeout=5, after=n)
        assert wait_vip([h1, h2], vip6) is h2
    finally:
        d1.kill()
        d2.kill()


def test_missing_interface_is_fault_and_recovers_when_it_appears(topology, tmp_path):
    h1 = topology.add_host("h1", 11)
    h1.run("ip", "link", "set", "eth0", "down")
    h1.run("ip", "link", "set", "eth0", "name", "lan9")
    d1 = Havipd(h1, vrrp_config(priority=110, vips=[VIP_CIDR]), tmp_path)
    try:
        d1.start()
        t = d1.wait_state("fault", timeout=10)
        assert "eth0" in t["reason"] and "down" in t["reason"]
        time.sleep(1)
        assert d1.running, "the daemon must wait for its interface, not exit"
        h1.run("ip", "link", "set", "lan9", "name", "eth0")
        h1.run("ip", "link", "set", "eth0", "up")
        d1.wait_state("backup", timeout=10)
        d1.wait_state("master", timeout=10)
        assert wait_for(lambda: h1.has_address(VIP), 5, what="VIP on the recovered interface")
    finally:
        d1.kill()
