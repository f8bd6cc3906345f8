"""havip daemons with the etcd lease: real havip in network namespaces, a real
three-member etcd cluster (Debian's etcd-server), a fake Docker engine and fake Milvus
per host (tests/integration/fakeengine.py, which logs every start and stop exactly, so
"never two Milvus" is checked on the whole timeline, not sampled).

VRRPv3 at 0.2 s and an etcd lease of 5 s (keep-alive every 0.5 s, 0.5 s per request,
fencing 1.5 s before the earliest expiry) keep each scenario within seconds.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from havip.lab.havipd import Havipd, holders, vrrp_config, wait_vip
from havip.lab.netns import Host, wait_for
from tests.conftest import REPO, require_binary, require_root

pytestmark = [pytest.mark.root]

VIP = "198.18.0.50"
TTL, RENEW, REQ, MARGIN = 5, 0.5, 0.5, 1.5
KEY = "/service/havip/51/leader"


@dataclass
class Node:
    host: Host
    daemon: Havipd
    engine_log: Path
    engine: subprocess.Popen | None = None

    def milvus_runs(self) -> list[tuple[float, float | None]]:
        """[(start, stop or None)] from the fake engine's exact log."""
        runs: list[tuple[float, float | None]] = []
        if not self.engine_log.exists():
            return runs
        for line in self.engine_log.read_text().splitlines():
            e = json.loads(line)
            if e["event"] == "start":
                runs.append((e["at"], None))
            elif runs and runs[-1][1] is None:
                runs[-1] = (runs[-1][0], e["at"])
        return runs

    def running(self) -> bool:
        runs = self.milvus_runs()
        return bool(runs) and runs[-1][1] is None


@dataclass
class Site:
    cluster: object
    nodes: dict[str, Node]
    hosts: list[Host] = field(default_factory=list)

    def holder(self) -> str | None:
        got = self.cluster.get(KEY, via=self.cluster.members[-1])     # the witness: never cut here
        return got["value"] if got else None

    def wait_serving(self, name: str, timeout: float = 20) -> None:
        n = self.nodes[name]
        wait_for(lambda: n.running() and n.host.has_address(VIP), timeout, interval=0.05,
                 what=f"{name} to run Milvus and hold the VIP ({n.daemon.tail(5)})")

    def never_two_milvus(self) -> None:
        runs = sorted((s, e if e is not None else float("inf"), name)
                      for name, n in self.nodes.items() for s, e in n.milvus_runs())
        for (s1, e1, n1), (s2, e2, n2) in zip(runs, runs[1:]):
            assert s2 >= e1, f"two Milvus at once: {n1} ran {s1:.3f}-{e1:.3f}, {n2} started at {s2:.3f}"

    def start_all(self, serving: str = "h1") -> None:
        for n in self.nodes.values():
            n.daemon.start()
        self.wait_serving(serving)

    def starts(self, name: str) -> int:
        return len(self.nodes[name].milvus_runs())


def _site(topology, tmp_path, names_prios: list[tuple[str, int, int]], witness: bool):
    require_root()
    require_binary("etcd")
    require_binary("etcdctl")
    from havip.lab.etcd import EtcdCluster

    hosts = [topology.add_host(n, i, ipv6=False) for n, i, _ in names_prios]
    members = hosts + ([topology.add_host("w", 31, ipv6=False)] if witness else [])
    cluster = EtcdCluster(members, tmp_path / "etcd")
    topology.on_close(cluster.close)
    cluster.start()
    short = Path(tempfile.mkdtemp(prefix="hv", dir="/tmp"))      # unix socket paths are short
    topology.on_close(lambda: shutil.rmtree(short, ignore_errors=True))
    shared = tmp_path / "shared"
    shared.mkdir()
    nodes = {}
    for (name, _, prio), host in zip(names_prios, hosts):
        sock = short / f"{name}.sock"
        log = tmp_path / f"{name}-milvus.log"
        engine = host.popen([sys.executable, "-m", "tests.integration.fakeengine", str(sock), str(log)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert engine.stdout.readline().strip() == "ready"
        cfg = vrrp_config(priority=prio, vips=[f"{VIP}/24"], version=3, interval=0.2)
        cfg["milvus"] = {
            "container": "milvus", "docker": f"unix://{sock}", "grpc": "127.0.0.1:19530", "data_path": str(shared),
            "check_interval": 0.2, "check_timeout": 0.5, "rise": 1, "fall": 2, "start_timeout": 10,
            "stop_timeout": 1,
            "lease": {"backend": "etcd", "endpoints": cluster.endpoints, "ttl": TTL, "renew_interval": RENEW,
                      "request_timeout": REQ, "fence_margin": MARGIN}}
        nodes[name] = Node(host, Havipd(host, cfg, tmp_path), log, engine)
    site = Site(cluster, nodes, members)
    return site


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
    h1 = site.nodes["h1"]
    h1.daemon.kill()                         # a crash; systemd's ExecStopPost= runs cleanup
    out = h1.daemon.cleanup()
    assert out.returncode == 0, out.stderr
    assert "released: left by this host's earlier run" in out.stdout
    site.wait_serving("h2")
    assert site.holder().endswith("/h2")
    assert site.nodes["h2"].daemon.wait_state("master", timeout=1, after=n2)
    assert site.nodes["h3"].daemon.transitions()[n3:] == []           # h3 never moved
    assert site.starts("h3") == 0
    assert holders(site.hosts, VIP) == ["h2"]
    site.never_two_milvus()


def test_etcd_members_lost_one_changes_nothing_two_fence_then_quorum_brings_milvus_back(site_factory):
    site = site_factory([("h1", 11, 120), ("h2", 21, 110)])
    site.start_all()
    d1, d2 = site.nodes["h1"].daemon, site.nodes["h2"].daemon
    t1, t2 = len(d1.transitions()), len(d2.transitions())
    cl = site.cluster
    cl.kill(cl.member("w"))                  # one of three: nothing changes
    time.sleep(TTL + 1)
    assert d1.transitions()[t1:] == [] and d2.transitions()[t2:] == []
    assert site.nodes["h1"].running() and site.starts("h1") == 1
    cl.kill(cl.member("h2"))                 # two of three: no keep-alive can be answered
    fenced = d1.wait_state("fault", timeout=TTL + 5, after=t1)
    assert "cannot prove the etcd lease" in fenced["reason"] and "fencing" in fenced["reason"]
    _fenced_in_time(site.nodes["h1"], d1)
    assert not site.nodes["h1"].host.has_address(VIP)
    # Without a quorum nobody starts Milvus, whoever is VRRP master.
    time.sleep(TTL + 1)
    assert not any(n.running() for n in site.nodes.values())
    assert site.starts("h2") == 0
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
    n2 = len(site.nodes["h2"].daemon.transitions())
    h1.isolate()
    h2.isolate()                             # each reaches the witness, not the other
    site.nodes["h2"].daemon.wait_state("master", timeout=5, after=n2)
    site.nodes["h2"].daemon.wait_event(lambda e: "milvus waits: etcd leader key" in str(e.get("reason")),
                                       timeout=5, what="h2 waiting for the key")
    time.sleep(TTL + 1)
    assert site.nodes["h1"].daemon.state() == "master" and site.nodes["h2"].daemon.state() == "master"
    assert site.holder().endswith("/h1")
    assert holders(site.hosts, VIP) == ["h1"] and site.starts("h2") == 0
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
