"""havip daemons with the etcd lease: real havip in network namespaces, a real
three-member etcd cluster (Debian's etcd-server), a fake Docker engine and fake Milvus
per host (havip/lab/fakeengine.py, which logs every start and stop exactly, so
"never two Milvus" is checked on the whole timeline, not sampled).

VRRPv3 at 0.2 s and an etcd lease of 5 s (keep-alive every 0.5 s, 0.5 s per request,
fencing 1.5 s before the earliest expiry) keep each scenario within seconds.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest

from havip.lab.etcdsite import KEY, VIP, Node, Site, build_site
from havip.lab.havipd import Havipd, holders, wait_vip
from havip.lab.netns import Host, wait_for
from tests.conftest import require_binary, require_root

pytestmark = [pytest.mark.root]

TTL, RENEW, REQ, MARGIN = 5, 0.5, 0.5, 1.5


def _site(topology, tmp_path, names_prios: list[tuple[str, int, int]], witness: bool) -> Site:
    require_root()
    require_binary("etcd")
    require_binary("etcdctl")
    return build_site(topology, tmp_path, names_prios, witness=witness,
                      etcd={"ttl": TTL, "renew_interval": RENEW, "request_timeout": REQ, "fence_margin": MARGIN})


@pytest.fixture
def site_factory(topology, tmp_path):
    made: list[Site] = []

    def make(names_prios, witness=True) -> Site:
        s = _site(topology, tmp_path, names_prios, witness)
        made.append(s)
        return s
    yield make
    for s in made:
        for n in s.nodes.values():
            n.daemon.kill()


def _cut_tcp(host: Host, *others: Host) -> None:
    """Drop TCP between `host` and `others` (etcd's client and peer traffic); VRRP
    (IP protocol 112) still flows."""
    for o in others:
        host.run("iptables", "-A", "INPUT", "-p", "tcp", "-s", o.addr, "-j", "DROP")
        host.run("iptables", "-A", "OUTPUT", "-p", "tcp", "-d", o.addr, "-j", "DROP")


def _heal_tcp(host: Host) -> None:
    host.run("iptables", "-F", "INPUT")
    host.run("iptables", "-F", "OUTPUT")


def _fenced_in_time(node: Node, d: Havipd) -> None:
    """The fence began while the lease still had at least fence_margin to live (its
    reason says how long, counted from the last keep-alive etcd answered: a minority
    leader may answer for a moment after the quorum is gone), and Milvus was gone
    within that margin."""
    e = next(e for e in reversed(d.events()) if "; fencing" in str(e.get("reason")))
    left = float(re.search(r"it may expire in ([0-9.]+)s", e["reason"])[1])
    assert left >= MARGIN - 0.1, e["reason"]
    decided = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
    stopped = json.loads(node.engine_log.read_text().splitlines()[-1])
    assert stopped["event"] == "stop" and stopped["wall"] - decided < left, (stopped, e)


def test_three_hosts_the_holder_dies_the_highest_remaining_takes_the_key(site_factory):
    site = site_factory([("h1", 11, 120), ("h2", 21, 110), ("h3", 41, 100)], witness=False)
    site.start_all()
    assert site.holder().endswith("/h1")
    assert [d.daemon.state() for d in site.nodes.values()] == ["master", "backup", "backup"]
    n2, n3 = len(site.nodes["h2"].daemon.transitions()), len(site.nodes["h3"].daemon.transitions())
    h1, s3 = site.nodes["h1"], site.starts("h3")
    h1.daemon.kill()                         # a crash; systemd's ExecStopPost= runs cleanup
    out = h1.daemon.cleanup()
    assert out.returncode == 0, out.stderr
    assert "released: left by this host's earlier run" in out.stdout
    site.wait_serving("h2")
    assert site.holder().endswith("/h2")
    assert site.nodes["h2"].daemon.wait_state("master", timeout=1, after=n2)
    # h2 (110) and h3 (100) time out on the dead master only 8 ms apart (their skew times
    # at 0.2 s adverts), so on a loaded host h3 may fire first and then yield to h2's first
    # advert: VRRP as specified, not a fault. What must hold: h3 moved at most that once,
    # ends backup, and its Milvus never ran beside another (never_two_milvus below).
    moved = site.nodes["h3"].daemon.transitions()[n3:]
    if moved:
        assert [(t["from"], t["to"]) for t in moved] == [("backup", "master"), ("master", "backup")], moved
        assert "above ours" in moved[-1]["reason"], moved
    else:
        assert site.starts("h3") == s3                                # h3 never moved, never started
    assert holders(site.hosts, VIP) == ["h2"]
    site.never_two_milvus()


def test_etcd_members_lost_one_changes_nothing_two_fence_then_quorum_brings_milvus_back(site_factory):
    site = site_factory([("h1", 11, 120), ("h2", 21, 110)])
    site.start_all()
    d1, d2 = site.nodes["h1"].daemon, site.nodes["h2"].daemon
    t1, t2, s1, s2 = len(d1.transitions()), len(d2.transitions()), site.starts("h1"), site.starts("h2")
    cl = site.cluster
    cl.kill(cl.member("w"))                  # one of three: nothing changes
    time.sleep(TTL + 1)
    assert d1.transitions()[t1:] == [] and d2.transitions()[t2:] == []
    assert site.nodes["h1"].running() and site.starts("h1") == s1
    cl.kill(cl.member("h2"))                 # two of three: no keep-alive can be answered
    fenced = d1.wait_state("fault", timeout=TTL + 5, after=t1)
    assert "cannot prove the etcd lease" in fenced["reason"] and "fencing" in fenced["reason"]
    _fenced_in_time(site.nodes["h1"], d1)
    assert not site.nodes["h1"].host.has_address(VIP)
    # Without a quorum nobody starts Milvus, whoever is VRRP master.
    time.sleep(TTL + 1)
    assert not any(n.running() for n in site.nodes.values())
    assert site.starts("h2") == s2
    cl.start_member(cl.member("h2"))
    cl.start_member(cl.member("w"))
    wait_for(lambda: any(n.running() for n in site.nodes.values()), 30, interval=0.1,
             what="Milvus back once the quorum is")
    site.never_two_milvus()


def test_holder_cut_from_the_etcd_majority_fences_and_the_peer_takes_the_key(site_factory):
    require_binary("iptables")
    site = site_factory([("h1", 11, 120), ("h2", 21, 110)])
    site.start_all()
    n2 = len(site.nodes["h2"].daemon.transitions())
    h1, h2, w = site.nodes["h1"].host, site.nodes["h2"].host, site.hosts[-1]
    _cut_tcp(h1, h2, w)                      # h1 keeps VRRP with h2, loses etcd's majority
    cut = time.monotonic()
    t = site.nodes["h1"].daemon.wait_state("fault", timeout=TTL + 5)
    assert "cannot prove the etcd lease" in t["reason"]
    _fenced_in_time(site.nodes["h1"], site.nodes["h1"].daemon)
    site.wait_serving("h2", timeout=TTL + 10)
    took = time.monotonic() - cut
    assert site.holder().endswith("/h2")
    assert site.nodes["h2"].daemon.wait_state("master", timeout=1, after=n2)
    site.never_two_milvus()
    # h1 stays back while cut off (held back: it must not take the VRRP master back
    # and then sit on a key it cannot get).
    _heal_tcp(h1)
    time.sleep(2)
    assert holders(site.hosts, VIP) == ["h2"] and site.nodes["h2"].running()
    site.never_two_milvus()
    print(f"takeover after the holder lost etcd: {took:.2f}s")


def test_hosts_cut_from_each_other_both_masters_one_key_holder(site_factory):
    site = site_factory([("h1", 11, 120), ("h2", 21, 110)])
    site.start_all()
    h1, h2 = site.nodes["h1"].host, site.nodes["h2"].host
    n2, s2 = len(site.nodes["h2"].daemon.transitions()), site.starts("h2")
    h1.isolate()
    h2.isolate()                             # each reaches the witness, not the other
    site.nodes["h2"].daemon.wait_state("master", timeout=5, after=n2)
    site.nodes["h2"].daemon.wait_event(lambda e: "milvus waits: etcd leader key" in str(e.get("reason")),
                                       timeout=5, what="h2 waiting for the key")
    time.sleep(TTL + 1)
    assert site.nodes["h1"].daemon.state() == "master" and site.nodes["h2"].daemon.state() == "master"
    assert site.holder().endswith("/h1")
    assert holders(site.hosts, VIP) == ["h1"] and site.starts("h2") == s2
    h1.isolate(False)
    h2.isolate(False)
    site.nodes["h2"].daemon.wait_state("backup", timeout=5, after=n2 + 1)
    assert wait_vip(site.hosts, VIP) is h1
    site.never_two_milvus()


def test_bad_etcd_input_no_milvus_and_a_clear_reason(site_factory):
    site = site_factory([("h1", 11, 120)])
    d1 = site.nodes["h1"].daemon
    # Endpoints where nothing listens: the master says so and never starts Milvus.
    d1.config["milvus"]["lease"]["endpoints"] = ["http://198.18.0.99:2379", "http://198.18.0.11:2399"]
    d1.start()
    e = d1.wait_event(lambda e: "milvus waits: etcd unreachable" in str(e.get("reason")), timeout=15,
                      what="the unreachable etcd named")
    assert "http://198.18.0.99:2379" in e["reason"]
    time.sleep(1)
    assert site.starts("h1") == 0 and not site.nodes["h1"].host.has_address(VIP)
    d1.kill()
    # A key someone else wrote (no lease): named, never taken over.
    assert site.cluster.ctl("put", KEY, "not-havip").returncode == 0
    d1.config["milvus"]["lease"]["endpoints"] = site.cluster.endpoints
    d1.start()
    d1.wait_event(lambda e: "holds 'not-havip' bound to no etcd lease" in str(e.get("reason")), timeout=15,
                  what="the foreign key named")
    time.sleep(1)
    assert site.starts("h1") == 0 and site.holder() == "not-havip"
