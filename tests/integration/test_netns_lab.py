"""The namespace lab itself: hosts reach each other only through our bridge, and
close() leaves nothing behind."""

import subprocess

from havip.lab.netns import Topology, ns_pids
from tests.conftest import require_root


def _ping(host, addr: str) -> bool:
    return host.run("ping", "-c", "1", "-W", "1", addr, check=False).returncode == 0


def test_hosts_reach_each_other_and_cut_isolates(topology):
    a = topology.add_host("a", 11)
    b = topology.add_host("b", 21)
    assert _ping(a, b.addr)
    assert _ping(a, b.addr6)
    a.cut()
    assert not _ping(a, b.addr)
    a.restore()
    assert _ping(a, b.addr)


def test_close_removes_namespaces_and_processes():
    require_root()
    topo = Topology()
    h = topo.add_host("a", 11)
    proc = h.popen(["sleep", "300"])
    names = [topo.switch, h.ns]
    topo.close()
    assert proc.poll() is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in names:
        assert ns not in listed
        assert ns_pids(ns) == []
