"""SIGHUP re-reads the config: a valid change is applied live, an invalid file keeps the
running config and says why, restart-only keys are named and not half-applied."""

from __future__ import annotations

import signal

from havip.lab.havipd import Havipd, vrrp_config
from havip.lab.netns import wait_for


def test_sighup_reload(topology, tmp_path):
    h1 = topology.add_host("h1", 11)
    d = Havipd(h1, vrrp_config(priority=110, vips=["198.18.0.50/24"]), tmp_path)
    try:
        d.start()
        d.wait_state("master", timeout=15)
        # Invalid: the running config stays, every problem is listed.
        d.conf_path.write_text("interface: eth0\nvirtual_router_id: 999\npriority: 0\n")
        d.proc.send_signal(signal.SIGHUP)
        e = d.wait_event(lambda e: e.get("event") == "reload_rejected", timeout=5, what="reload rejected")
        assert any("virtual_router_id" in p for p in e["problems"]) and any("priority" in p for p in e["problems"])
        assert d.running and d.state() == "master"
        # Valid: priority applies now; the VIP list needs a restart and is kept.
        d.config["priority"] = 120
        d.config["virtual_ipaddresses"] = ["198.18.0.60/24"]
        d.write_config()
        d.proc.send_signal(signal.SIGHUP)
        e = d.wait_event(lambda e: e.get("event") == "reloaded", timeout=5, what="reloaded")
        assert e["applied"] == ["priority"] and e["needs_restart"] == ["virtual_ipaddresses"]
        assert wait_for(lambda: h1.has_address("198.18.0.50"), 2, what="old VIP kept")
        assert not h1.has_address("198.18.0.60")
    finally:
        d.kill()
