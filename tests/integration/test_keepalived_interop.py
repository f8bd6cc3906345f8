"""havip and keepalived (Debian's 2.2.7) on one link: the wire compatibility that lets a
site migrate one host at a time. Both directions, VRRPv2 with a password and VRRPv3 at
0.1 s; in steady state exactly one host holds the VIP."""

from __future__ import annotations

import time

import pytest

from havip.lab.havipd import Havipd, holders, vrrp_config, wait_vip
from havip.lab.keepalived import Keepalived, render_conf
from tests.conftest import require_binary

VIP = "198.18.0.50"

MODES = {
    "v2-pass-1s": dict(version=2, interval=1, password="1111"),
    "v3-100ms": dict(version=3, interval=0.1, password=None),
}


def _havip(host, tmp_path, prio: int, mode: dict) -> Havipd:
    return Havipd(host, vrrp_config(priority=prio, vips=[f"{VIP}/24"], version=mode["version"],
                                    interval=mode["interval"], password=mode["password"]), tmp_path)


def _keepalived(host, tmp_path, prio: int, mode: dict) -> Keepalived:
    conf = render_conf(vrid=51, priority=prio, vips=[f"{VIP}/24"], version=mode["version"],
                       advert_int=mode["interval"], auth_pass=mode["password"])
    return Keepalived(host, conf, tmp_path / host.name)


def _steady(hosts, expect: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert holders(hosts, VIP) == [expect]
        time.sleep(0.1)


@pytest.mark.parametrize("mode", list(MODES))
def test_havip_master_with_keepalived_backup(topology, tmp_path, mode):
    require_binary("keepalived")
    m = MODES[mode]
    h1, h2 = topology.add_host("h1", 11), topology.add_host("h2", 21)
    (tmp_path / "h2").mkdir()
    hv = _havip(h1, tmp_path, 110, m)
    ka = _keepalived(h2, tmp_path, 91, m)
    try:
        hv.start()
        hv.wait_state("master", timeout=15)
        ka.start()
        assert wait_vip([h1, h2], VIP) is h1
        _steady([h1, h2], "h1", 3 * m["interval"] + 1)
        assert hv.state() == "master"
        # havip stops cleanly: keepalived takes over on the priority-0 advert.
        hv.stop()
        assert wait_vip([h1, h2], VIP, timeout=5) is h2
        # havip returns with the higher priority and preempts keepalived.
        hv.start()
        hv.wait_state("master", timeout=10, after=len(hv.transitions()))
        assert wait_vip([h1, h2], VIP, timeout=5) is h1
        _steady([h1, h2], "h1", 2 * m["interval"] + 0.5)
    finally:
        hv.kill()
        ka.stop()


@pytest.mark.parametrize("mode", list(MODES))
def test_keepalived_master_with_havip_backup(topology, tmp_path, mode):
    require_binary("keepalived")
    m = MODES[mode]
    h1, h2 = topology.add_host("h1", 11), topology.add_host("h2", 21)
    (tmp_path / "h1").mkdir()
    ka = _keepalived(h1, tmp_path, 110, m)
    hv = _havip(h2, tmp_path, 91, m)
    try:
        ka.start()
        assert wait_vip([h1, h2], VIP, timeout=15) is h1
        hv.start()
        hv.wait_state("backup", timeout=10)
        _steady([h1, h2], "h1", 3 * m["interval"] + 1)
        assert hv.state() == "backup"
        # keepalived stops cleanly: havip takes over on its priority-0 advert.
        n = len(hv.transitions())
        ka.stop()
        t = hv.wait_state("master", timeout=5, after=n)
        assert "resigned (priority 0)" in t["reason"]
        assert wait_vip([h1, h2], VIP) is h2
        # keepalived comes back with the higher priority: havip steps down.
        n = len(hv.transitions())
        ka.start()
        t = hv.wait_state("backup", timeout=10, after=n)
        assert "above ours" in t["reason"]
        assert wait_vip([h1, h2], VIP, timeout=5) is h1
        # The link of keepalived's host is cut: havip takes over after master-down.
        n = len(hv.transitions())
        h1.link_down()
        t = hv.wait_state("master", timeout=5, after=n)
        assert "silent" in t["reason"]
        assert h2.has_address(VIP)
    finally:
        hv.kill()
        ka.stop()
