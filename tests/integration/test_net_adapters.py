"""The network adapters against a real kernel, each run inside a lab host's namespace
through tests.integration.nsagent (the test process itself stays where it is)."""

from __future__ import annotations

import subprocess
import time

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from havip.lab.netns import wait_for
from tests.conftest import require_binary
from tests.integration.nsagent import Agent, AgentError

VIP4, VIP6 = "198.18.0.50/24", "fd00:198:18::50/64"


@pytest.fixture
def agent(topology):
    """agent(host) -> an Agent running in host's namespace, closed with the topology."""
    def make(host):
        a = Agent(host)
        topology.on_close(a.close)
        return a
    return make


def _mac(host) -> str:
    return host.run("ip", "-o", "link", "show", "eth0").stdout.split("link/ether ")[1].split()[0]


def _recreate_eth0(host) -> None:
    """Put a new eth0 (new index, new MAC) back on the switch, as add_host() built it."""
    topo = host.topo
    subprocess.run(["ip", "link", "add", host.port, "netns", topo.switch, "type", "veth",
                    "peer", "name", "eth0", "netns", host.ns], check=True, capture_output=True)
    topo.sw("ip", "link", "set", host.port, "master", "br0")
    topo.sw("ip", "link", "set", host.port, "up")
    host.run("ip", "addr", "add", host.ipv4, "dev", "eth0")
    host.run("ip", "link", "set", "eth0", "up")


def _neigh(host, ip: str) -> str:
    return host.run("ip", "neigh", "show", ip, "dev", "eth0").stdout


# ---------------------------------------------------------------- VipManager


def test_vip_add_present_remove_are_idempotent(topology, agent):
    a = topology.add_host("a", 11)
    # DAD on for this interface: the VIP must still be usable at once (IFA_F_NODAD).
    a.run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=1")
    ag = agent(a)
    ag.new("v", "VipManager", "eth0", [VIP4, VIP6])
    assert ag.call("v", "present") == []
    assert ag.call("v", "add") == [VIP4, VIP6]
    assert ag.call("v", "add") == []
    assert ag.call("v", "present") == [VIP4, VIP6]
    assert VIP4 in a.addresses() and VIP6 in a.addresses()
    line6 = next(ln for ln in a.run("ip", "-6", "addr", "show", "dev", "eth0").stdout.splitlines()
                 if VIP6 in ln)
    assert "nodad" in line6 and "tentative" not in line6
    assert ag.call("v", "remove") == [VIP4, VIP6]
    assert ag.call("v", "remove") == []
    assert ag.call("v", "present") == []
    assert VIP4 not in a.addresses() and VIP6 not in a.addresses()
    assert a.ipv4 in a.addresses()


def test_vip_on_missing_interface_names_interface_and_address(topology, agent):
    ag = agent(topology.add_host("a", 11))
    ag.new("v", "VipManager", "nope0", [VIP4])
    for method in ("add", "remove", "present"):
        with pytest.raises(AgentError) as err:
            ag.call("v", method)
        assert err.value.kind == "AdapterError"
        assert "nope0" in err.value.message and "does not exist" in err.value.message
    with pytest.raises(AgentError, match="cannot add 198.18.0.50/24 on nope0"):
        ag.call("v", "add")


def test_without_net_admin_and_net_raw_every_adapter_says_so(topology):
    require_binary("setpriv")
    a = topology.add_host("a", 11)
    # Root, but with CAP_NET_ADMIN and CAP_NET_RAW gone from the bounding set.
    ag = Agent(a, prefix=["setpriv", "--bounding-set", "-net_admin,-net_raw", "--"])
    topology.on_close(ag.close)
    ag.new("v", "VipManager", "eth0", [VIP4])
    with pytest.raises(AgentError, match="cannot add 198.18.0.50/24 on eth0: Operation not permitted"):
        ag.call("v", "add")
    with pytest.raises(AgentError, match="cannot open a raw VRRP socket for eth0: Operation not permitted"):
        ag.new("s", "AdvertSocket", "eth0", 4)
    with pytest.raises(AgentError, match="cannot open a packet socket on eth0: Operation not permitted") as err:
        ag.new("g", "Announcer", "eth0")
    assert err.value.kind == "AdapterError"
    assert not a.has_address("198.18.0.50")


# ---------------------------------------------------------------- AdvertSocket


def _stamped(got: dict) -> dict:
    """The packet without its kernel receive time, which must be there: the wall clock when
    it arrived (the master-down timer runs from it), so within a minute of now."""
    got = dict(got)
    stamp = got.pop("stamp")
    assert isinstance(stamp, float) and abs(stamp - time.time()) < 60, stamp
    return got


def _pair(topology, agent, family, **kw):
    a, b = topology.add_host("a", 11), topology.add_host("b", 21)
    A, B = agent(a), agent(b)
    A.new("s", "AdvertSocket", "eth0", family, **kw.get("a", {}))
    B.new("s", "AdvertSocket", "eth0", family, **kw.get("b", {}))
    return a, b, A, B


def test_ipv4_multicast_arrives_with_ttl_255_and_is_not_looped_back(topology, agent):
    a, b, A, B = _pair(topology, agent, 4)
    assert A.call("s", "source") == a.addr
    assert A.call("s", "destinations") == ["224.0.0.18"]
    A.call("s", "send", b"\x21\x33advert-from-a")
    got = _stamped(B.call("s", "wait", 3.0))
    assert got == {"payload": b"\x21\x33advert-from-a", "src": a.addr, "dst": "224.0.0.18", "ttl": 255}
    # A's socket works (it hears B) but never hears itself: multicast loop is off.
    B.call("s", "send", b"from-b")
    assert A.call("s", "wait", 3.0)["payload"] == b"from-b"
    assert A.call("s", "wait", 0.3) is None
    assert A.call("s", "recv") is None          # non-blocking: None, not EAGAIN


def test_ipv6_multicast_uses_link_local_source_and_hop_limit_255(topology, agent):
    a, b, A, B = _pair(topology, agent, 6)
    src = A.call("s", "source")
    assert src.startswith("fe80:") and src in {x.split("/")[0] for x in a.addresses()}
    A.call("s", "send", b"\x31\x35v3")
    got = B.call("s", "wait", 3.0)
    assert _stamped(got) == {"payload": b"\x31\x35v3", "src": src, "dst": "ff02::12", "ttl": 255}
    B.call("s", "send", b"from-b")
    assert A.call("s", "wait", 3.0)["payload"] == b"from-b"
    assert A.call("s", "wait", 0.3) is None


def test_unicast_goes_to_each_peer_from_the_given_source_unfiltered(topology, agent):
    a, b, A, B = _pair(topology, agent, 4, a={"unicast_peers": ["198.18.0.21"]},
                       b={"unicast_peers": ["198.18.0.11"]})
    c = topology.add_host("c", 31)
    assert A.call("s", "destinations") == [b.addr]
    A.call("s", "send", b"uni")
    assert _stamped(B.call("s", "wait", 3.0)) == {"payload": b"uni", "src": a.addr, "dst": b.addr, "ttl": 255}
    A.call("s", "send_to", b"uni-one", b.addr)      # VRRPv3: a payload per peer
    assert B.call("s", "wait", 3.0)["payload"] == b"uni-one"
    # An explicit source (a secondary address here) is used as given.
    a.run("ip", "addr", "add", "198.18.0.12/24", "dev", "eth0")
    A.new("s2", "AdvertSocket", "eth0", 4, unicast_peers=[b.addr], unicast_source="198.18.0.12")
    assert A.call("s2", "source") == "198.18.0.12"
    A.call("s2", "send", b"uni2")
    assert B.call("s", "wait", 3.0)["src"] == "198.18.0.12"
    # A host that is not a configured peer still gets through: the receive checks,
    # not the socket, decide (and count) that.
    C = agent(c)
    C.new("s", "AdvertSocket", "eth0", 4, unicast_peers=[b.addr])
    C.call("s", "send", b"stranger")
    assert B.call("s", "wait", 3.0)["src"] == c.addr


def test_ipv6_unicast_to_a_global_peer(topology, agent):
    a, b, A, B = _pair(topology, agent, 6, a={"unicast_peers": ["fd00:198:18::15"],
                                              "unicast_source": "fd00:198:18::b"},
                       b={"unicast_peers": ["fd00:198:18::b"]})
    A.call("s", "send", b"uni6")
    assert _stamped(B.call("s", "wait", 3.0)) == {"payload": b"uni6", "src": a.addr6, "dst": b.addr6, "ttl": 255}


@pytest.mark.parametrize("family", [4, 6])
def test_send_on_a_down_interface_raises_adapter_error_then_recovers(topology, agent, family):
    a, b, A, B = _pair(topology, agent, family)
    a.run("ip", "link", "set", "eth0", "down")
    with pytest.raises(AgentError) as err:
        A.call("s", "send", b"x")
    assert err.value.kind == "AdapterError"
    assert err.value.message.startswith("sending a VRRP advert on eth0 from ")
    assert "failed: " in err.value.message
    dst = "224.0.0.18" if family == 4 else "ff02::12"
    with pytest.raises(AgentError, match=f"to {dst} failed: "):
        A.call("s", "send_to", b"x", dst)
    a.run("ip", "link", "set", "eth0", "up")
    # IPv6 drops the link-local address while down; refresh_source() picks it up again.
    wait_for(lambda: A.call("s", "refresh_source"), 5, what="a source address on eth0")
    A.call("s", "send", b"back")
    assert B.call("s", "wait", 3.0)["payload"] == b"back"


def test_advert_socket_on_missing_interface_is_an_adapter_error(topology, agent):
    ag = agent(topology.add_host("a", 11))
    with pytest.raises(AgentError, match="nope0 does not exist") as err:
        ag.new("s", "AdvertSocket", "nope0", 4)
    assert err.value.kind == "AdapterError"


def test_advert_socket_rebinds_to_a_recreated_interface(topology, agent):
    a, b, A, B = _pair(topology, agent, 4)
    a.run("ip", "link", "del", "eth0")
    with pytest.raises(AgentError, match="sending a VRRP advert on eth0"):
        A.call("s", "send", b"x")
    _recreate_eth0(a)
    assert A.call("s", "refresh_source") == a.addr     # new ifindex: bound and joined again
    A.call("s", "send", b"again")
    assert B.call("s", "wait", 3.0)["payload"] == b"again"
    B.call("s", "send", b"to-the-new-eth0")
    assert A.call("s", "wait", 3.0)["payload"] == b"to-the-new-eth0"


# ---------------------------------------------------------------- Announcer


def test_announce_moves_the_neighbours_of_a_vip_to_the_new_owner(topology, agent):
    old, new, client = (topology.add_host(n, i) for n, i in (("old", 11), ("new", 12), ("client", 31)))
    O, N, C = agent(old), agent(new), agent(client)
    O.new("v", "VipManager", "eth0", [VIP4, VIP6])
    N.new("v", "VipManager", "eth0", [VIP4, VIP6])
    O.call("v", "add")
    # The client talks to the VIP on `old`, so its neighbour table points there.
    for ip in ("198.18.0.50", "fd00:198:18::50"):
        client.run("ping", "-c", "1", "-W", "2", ip)
        assert _mac(old) in _neigh(client, ip)
    O.call("v", "remove")
    N.call("v", "add")
    C.new("tap", "PacketTap", "eth0")
    N.new("g", "Announcer", "eth0")
    assert N.call("g", "mac") == _mac(new)
    assert N.call("g", "announce", [VIP4, VIP6]) == 2

    frames = [Ether(f) for f in C.call("tap", "frames", 2.0)]
    mac = _mac(new)
    garp = next(f for f in frames if ARP in f)
    assert (garp.src, garp.dst) == (mac, "ff:ff:ff:ff:ff:ff")
    assert (garp[ARP].op, garp[ARP].hwsrc, garp[ARP].psrc, garp[ARP].pdst) == (1, mac, "198.18.0.50", "198.18.0.50")
    na = next(f for f in frames if ICMPv6ND_NA in f)
    assert (na.src, na.dst) == (mac, "33:33:00:00:00:01")
    assert (na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == ("fd00:198:18::50", "ff02::1", 255)
    assert (na[ICMPv6ND_NA].tgt, na[ICMPv6ND_NA].O, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].R) == ("fd00:198:18::50", 1, 0, 0)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == mac

    # No traffic from the client: the announcements alone re-point its cache.
    for ip in ("198.18.0.50", "fd00:198:18::50"):
        wait_for(lambda: mac in _neigh(client, ip), 3, what=f"the client to learn {ip} is at {mac}")


def test_announce_is_fast_and_survives_the_interface_going_down(topology, agent):
    a = topology.add_host("a", 11)
    A = agent(a)
    A.new("g", "Announcer", "eth0")
    A.call("g", "prepare", [VIP4, VIP6])
    times = []
    for _ in range(20):
        assert A.call("g", "announce", [VIP4, VIP6]) == 2
        times.append(A.elapsed)
    # Prepared frames through one open socket: well under a millisecond each time
    # (scapy's sendp() takes ~25 ms); the bound here is loose on purpose.
    assert sorted(times)[len(times) // 2] < 0.005
    a.run("ip", "link", "set", "eth0", "down")
    with pytest.raises(AgentError, match="announcing on eth0 sent 0 of 1 frames") as err:
        A.call("g", "announce", [VIP4])
    assert err.value.kind == "AdapterError"
    a.run("ip", "link", "set", "eth0", "up")
    assert A.call("g", "announce", [VIP4]) == 1


def test_announcer_waits_for_a_missing_interface(topology, agent):
    a = topology.add_host("a", 11)
    A = agent(a)
    A.new("g", "Announcer", "nope0")            # the daemon may start before its link
    with pytest.raises(AgentError, match="cannot announce on nope0") as err:
        A.call("g", "announce", [VIP4])
    assert err.value.kind == "AdapterError"
    a.run("ip", "link", "add", "nope0", "type", "veth", "peer", "name", "nope0p")
    a.run("ip", "link", "set", "nope0p", "up")
    a.run("ip", "link", "set", "nope0", "up")
    assert A.call("g", "announce", [VIP4]) == 1


# ---------------------------------------------------------------- LinkMonitor


def _changed(ag) -> bool:
    return ag.call("m", "drain")


def test_link_monitor_follows_carrier_admin_state_and_recreation(topology, agent):
    a = topology.add_host("a", 11)
    A = agent(a)
    A.new("m", "LinkMonitor", "eth0")
    assert A.call("m", "status") == {"exists": True, "up": True, "detail": "eth0 is up"}
    A.call("m", "drain")

    a.link_down()                                   # cable pulled: carrier lost
    wait_for(lambda: _changed(A), 5, what="a link notification")
    wait_for(lambda: not A.call("m", "status")["up"], 5, what="eth0 to report down")
    assert A.call("m", "status") == {"exists": True, "up": False, "detail": "eth0 has no carrier"}
    a.link_up()
    wait_for(lambda: A.call("m", "status")["up"], 5, what="eth0 to come back")
    A.call("m", "drain")

    a.run("ip", "link", "set", "eth0", "down")
    wait_for(lambda: _changed(A), 5, what="a link notification")
    assert A.call("m", "status")["detail"] == "eth0 is administratively down"
    a.run("ip", "link", "set", "eth0", "up")
    wait_for(lambda: A.call("m", "status")["up"], 5, what="eth0 to come back")
    A.call("m", "drain")

    a.run("ip", "link", "del", "eth0")
    wait_for(lambda: _changed(A), 5, what="a notification that eth0 went away")
    assert A.call("m", "status") == {"exists": False, "up": False, "detail": "interface eth0 does not exist"}
    assert A.call("m", "drain") is False            # nothing pending, and no exception

    _recreate_eth0(a)
    wait_for(lambda: _changed(A), 5, what="a notification that eth0 is back")
    wait_for(lambda: A.call("m", "status")["up"], 5, what="the new eth0 to be up")
    # Address changes on the re-created interface are ours too (the index changed).
    A.call("m", "drain")
    a.run("ip", "addr", "add", "198.18.0.99/24", "dev", "eth0")
    wait_for(lambda: _changed(A), 5, what="an address notification")


def test_link_monitor_on_missing_interface_does_not_raise(topology, agent):
    A = agent(topology.add_host("a", 11))
    A.new("m", "LinkMonitor", "nope0")
    assert A.call("m", "status") == {"exists": False, "up": False, "detail": "interface nope0 does not exist"}
    assert A.call("m", "drain") is False
    topology.hosts["a"].run("ip", "link", "add", "nope0", "type", "veth", "peer", "name", "nope0p")
    wait_for(lambda: _changed(A), 5, what="a notification for the new nope0")
    assert A.call("m", "status") == {"exists": True, "up": False, "detail": "nope0 is administratively down"}
