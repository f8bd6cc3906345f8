"""A site for the etcd lease in the lab: havip hosts in namespaces, each with a fake Docker
engine and fake Milvus (havip.lab.fakeengine, whose log of starts and stops is exact), a
real etcd cluster (havip.lab.etcd: one member per havip host, plus a witness), and the
questions tests and benchmarks ask: who holds the key, who serves, did two Milvus ever
run at once.

`lease="file"` builds the same site on the file lease (DATA_PATH/.havip-lease in a shared
directory), for side-by-side benchmarks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from havip.lab.etcd import EtcdCluster
from havip.lab.havipd import Havipd, vrrp_config
from havip.lab.netns import Host, Topology, wait_for

VIP = "198.18.0.50"
KEY = "/service/havip/51/leader"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Node:
    host: Host
    daemon: Havipd
    engine_log: Path

    def milvus_runs(self) -> list[tuple[float, float | None]]:
        """[(start, stop or None)], monotonic, from the fake engine's exact log."""
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
    cluster: EtcdCluster | None
    nodes: dict[str, Node]
    hosts: list[Host] = field(default_factory=list)

    def holder(self) -> str | None:
        got = self.cluster.get(KEY, via=self.cluster.members[-1])     # the witness (or last host)
        return got["value"] if got else None

    def wait_serving(self, name: str, timeout: float = 20) -> float:
        """Wait until `name` runs Milvus and holds the VIP; return when its Milvus started."""
        n = self.nodes[name]
        wait_for(lambda: n.running() and n.host.has_address(VIP), timeout, interval=0.02,
                 what=f"{name} to run Milvus and hold the VIP ({n.daemon.tail(5)})")
        return n.milvus_runs()[-1][0]

    def never_two_milvus(self) -> None:
        runs = sorted((s, e if e is not None else float("inf"), name)
                      for name, n in self.nodes.items() for s, e in n.milvus_runs())
        for (s1, e1, n1), (s2, e2, n2) in zip(runs, runs[1:]):
            assert s2 >= e1, f"two Milvus at once: {n1} ran {s1:.3f}-{e1:.3f}, {n2} started at {s2:.3f}"

    def start_all(self, serving: str = "h1") -> None:
        """Start every havip; return once `serving` runs Milvus and the others settled as
        backups (at start-up a lower priority may take the key first and hand it over)."""
        for n in self.nodes.values():
            n.daemon.start()
        self.wait_serving(serving)
        for name, n in self.nodes.items():
            if name != serving:
                wait_for(lambda: n.daemon.state() == "backup" and not n.running(), 10, interval=0.05,
                         what=f"{name} to settle as backup")

    def starts(self, name: str) -> int:
        return len(self.nodes[name].milvus_runs())

    def kill_all(self) -> None:
        for n in self.nodes.values():
            n.daemon.kill()


def build_site(topo: Topology, workdir: Path, names_prios: list[tuple[str, int, int]], *, witness: bool = True,
               lease: str = "etcd", etcd: dict | None = None, vrrp: tuple[int, float] = (3, 0.2),
               milvus: dict | None = None, start_etcd: bool | None = None) -> Site:
    """Hosts (name, address index, priority) with havip, fake engines and (for the etcd
    lease, or with start_etcd) an etcd member each, plus a witness member; nothing
    started but etcd."""
    workdir = Path(workdir)
    start_etcd = lease == "etcd" if start_etcd is None else start_etcd
    hosts = [topo.add_host(n, i, ipv6=False) for n, i, _ in names_prios]
    members = hosts + ([topo.add_host("w", 31, ipv6=False)] if witness and start_etcd else [])
    cluster = None
    if start_etcd:
        cluster = EtcdCluster(members, workdir / "etcd")
        topo.on_close(cluster.close)
        cluster.start()
    short = Path(tempfile.mkdtemp(prefix="hv", dir="/tmp"))      # unix socket paths are short
    topo.on_close(lambda: shutil.rmtree(short, ignore_errors=True))
    shared = workdir / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    nodes = {}
    for (name, _, prio), host in zip(names_prios, hosts):
        sock, log = short / f"{name}.sock", workdir / f"{name}-milvus.log"
        engine = host.popen([sys.executable, "-m", "havip.lab.fakeengine", str(sock), str(log)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
        if engine.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the fake Docker engine on {name} did not start")
        cfg = vrrp_config(priority=prio, vips=[f"{VIP}/24"], version=vrrp[0], interval=vrrp[1])
        cfg["milvus"] = {
            "container": "milvus", "docker": f"unix://{sock}", "grpc": "127.0.0.1:19530", "data_path": str(shared),
            "check_interval": 0.2, "check_timeout": 0.5, "rise": 1, "fall": 2, "start_timeout": 10,
            "stop_timeout": 1, **(milvus or {}),
            "lease": {"backend": "etcd", "endpoints": cluster.endpoints, **(etcd or {})} if lease == "etcd" else True}
        nodes[name] = Node(host, Havipd(host, cfg, workdir), log)
    return Site(cluster, nodes, members)
