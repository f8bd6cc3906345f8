"""Debian's keepalived in lab namespaces: the runner itself, and keepalived's adverts as
havip's AdvertSocket receives them (the reference havip must interoperate with)."""

from __future__ import annotations

import struct

import pytest

from havip.lab.keepalived import Keepalived, pid_alive, render_conf
from havip.lab.netns import wait_for
from tests.conftest import require_binary
from tests.integration.nsagent import Agent

VIP = "198.18.0.50"


@pytest.fixture
def keepalived(topology, tmp_path):
    """keepalived(host, conf) -> a started Keepalived, stopped with the topology."""
    require_binary("keepalived")

    def make(host, conf: str, *, start: bool = True) -> Keepalived:
        ka = Keepalived(host, conf, tmp_path)
        topology.on_close(ka.stop)
        return ka.start() if start else ka
    return make


def _seed_conf(priority: int) -> str:
    # The HA seed's settings: VRRPv2, VRID 51, PASS 1111, one VIP.
    return render_conf(vrid=51, priority=priority, vips=[f"{VIP}/24"], auth_pass="1111")


def _holders(*hosts) -> list[str]:
    return [h.name for h in hosts if h.has_address(VIP)]


def test_two_keepalived_elect_one_master_and_sigterm_moves_the_vip(topology, keepalived):
    a, b = topology.add_host("a", 11), topology.add_host("b", 21)
    ka = keepalived(a, _seed_conf(110))
    kb = keepalived(b, _seed_conf(91))
    assert len(ka.pids) == 2 and all(pid_alive(p) for p in ka.pids)   # parent and VRRP child
    assert ka.running and kb.running

    wait_for(lambda: _holders(a, b) == ["a"], 15, what="a (priority 110) to hold the VIP alone")
    ka.wait_log("(VI_1) Entering MASTER STATE")
    kb.wait_log("(VI_1) Entering BACKUP STATE")

    pids = ka.pids
    ka.stop()                                           # SIGTERM: priority 0, VIP removed
    assert not ka.running and not any(pid_alive(p) for p in pids)
    assert "(VI_1) sent 0 priority" in ka.log()
    # Priority 0 makes the backup take over after its skew time, not 3 intervals.
    wait_for(lambda: _holders(a, b) == ["b"], 5, what="the VIP to move to b")
    kb.wait_log("(VI_1) Backup received priority 0 advertisement")

    kb.stop()
    assert _holders(a, b) == []
    assert not kb.running


def test_sigkill_is_a_crash_the_backup_waits_for_master_down(topology, keepalived):
    a, b = topology.add_host("a", 11), topology.add_host("b", 21)
    ka = keepalived(a, _seed_conf(110))
    kb = keepalived(b, _seed_conf(91))
    wait_for(lambda: _holders(a, b) == ["a"], 15, what="a to hold the VIP alone")
    pids = ka.pids
    ka.kill()
    assert not any(pid_alive(p) for p in pids)
    # No priority-0 advert and no clean-up: the dead master still has the address.
    assert "sent 0 priority" not in ka.log()
    wait_for(lambda: b.has_address(VIP), 10, what="b to declare the master down")
    assert "priority 0" not in kb.log()
    assert a.has_address(VIP)


def test_render_conf_variants_pass_keepalived_config_test(topology, keepalived):
    a = topology.add_host("a", 11)
    confs = [
        _seed_conf(110),
        render_conf(vrid=52, priority=110, vips=["198.18.0.60/24", "198.18.0.61/24"], auth_pass="secret12",
                    unicast_src="198.18.0.11", unicast_peers=["198.18.0.21"]),
        render_conf(vrid=53, priority=110, version=3, advert_int=0.5, vips=["fd00:198:18::50/64"]),
        render_conf(vrid=54, priority=100, version=3, advert_int=0.1, vips=["198.18.0.70/24"], nopreempt=True),
    ]
    for conf in confs:
        keepalived(a, conf, start=False).check()
    with pytest.raises(RuntimeError, match="VRID '300' not valid"):
        keepalived(a, render_conf(vrid=300, priority=100, vips=[f"{VIP}/24"]), start=False).check()
    with pytest.raises(ValueError):
        render_conf(vrid=1, priority=100, vips=[f"{VIP}/24"], nopreempt=True, state="MASTER")


# ---------------------------------------------------------------- interop with AdvertSocket


def _agent(topology, host) -> Agent:
    ag = Agent(host)
    topology.on_close(ag.close)
    return ag


@pytest.mark.parametrize("mode", ["v2-multicast", "v2-unicast", "v3-ipv6"])
def test_advert_socket_receives_keepalived_adverts(topology, keepalived, mode):
    a, b = topology.add_host("a", 11), topology.add_host("b", 21)
    listener = _agent(topology, b)
    if mode == "v2-multicast":
        conf = render_conf(vrid=51, priority=110, vips=[f"{VIP}/24"], auth_pass="1111", state="MASTER")
        listener.new("s", "AdvertSocket", "eth0", 4)
        src, dst = a.addr, "224.0.0.18"
    elif mode == "v2-unicast":
        # No unicast_src_ip: keepalived uses the interface's primary address.
        conf = render_conf(vrid=52, priority=110, vips=["198.18.0.60/24"], auth_pass="secret12",
                           unicast_peers=[b.addr], state="MASTER")
        listener.new("s", "AdvertSocket", "eth0", 4, unicast_peers=[a.addr])
        src, dst = a.addr, b.addr
    else:
        conf = render_conf(vrid=53, priority=110, version=3, advert_int=0.5,
                           vips=["fd00:198:18::50/64"], state="MASTER")
        listener.new("s", "AdvertSocket", "eth0", 6)
        src = next(x.split("/")[0] for x in a.addresses() if x.startswith("fe80:"))
        dst = "ff02::12"
    keepalived(a, conf)
    got = listener.call("s", "wait", 10.0)
    assert got is not None, "no advert from keepalived"
    assert (got["src"], got["dst"], got["ttl"]) == (src, dst, 255)
    ver_type, vrid, prio = struct.unpack_from("!BBB", got["payload"])
    assert (ver_type, prio) == ({"v3-ipv6": 0x31}.get(mode, 0x21), 110)
    assert vrid == {"v2-multicast": 51, "v2-unicast": 52, "v3-ipv6": 53}[mode]
