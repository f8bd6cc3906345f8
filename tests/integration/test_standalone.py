"""The lab's real Milvus (2.3.5 standalone, havip.lab.standalone) on one namespace host:
the image runs, havip's own CheckHealth client says healthy / refused / hung, the
container's PID 1 forwards docker stop's SIGTERM (the issue saw a lab container whose
PID 1 ignored it, so every stop waited for the SIGKILL), and a restart on the same data
after a SIGKILL is healthy within the lab's start_timeout (the lab's session TTL).

About 40 s: the image is built once per machine into the cache (~15 s the first time).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from havip.lab.docker import Dockerd
from havip.lab.milvuslab import STANDALONE_SETTINGS
from havip.lab.netns import Topology
from havip.lab.standalone import build_standalone_image, create_standalone_container, render_config
from tests.conftest import REPO, require_binary, require_root

pytestmark = [pytest.mark.root, pytest.mark.docker]

WAIT = """
import json, sys, time
from havip.checks.milvus_grpc import check_health
addr, budget, timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
while True:                      # at least once
    ok, last = check_health(addr, timeout)
    if ok or time.monotonic() - t0 >= budget:
        break
    time.sleep(0.1)
print(json.dumps({"ok": ok, "reason": last, "took": time.monotonic() - t0}))
"""


def ask(host, budget: float, timeout: float = 1.0) -> dict:
    proc = host.run(sys.executable, "-c", WAIT, f"{host.addr}:19530", str(budget), str(timeout),
                    timeout=budget + 60, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def lab_dir():
    """A short work directory (containerd's socket paths) with `shared/`, removed after."""
    require_root()
    require_binary("dockerd")
    work = Path(tempfile.mkdtemp(prefix="hvt", dir="/tmp"))
    (work / "shared").mkdir()
    yield work
    shutil.rmtree(work, ignore_errors=True)


def standalone_host(topo: Topology, work: Path, name: str, index: int, stop_timeout: int = 10):
    """A namespace host with its own dockerd, the standalone image and a stopped container
    `milvus` on `work/shared`; (host, dockerd)."""
    host = topo.add_host(name, index, ipv6=False)
    d = Dockerd(host, work / name)
    topo.on_close(d.stop)
    d.start()
    build_standalone_image(d)
    create_standalone_container(d, "milvus", work / "shared", stop_timeout=stop_timeout)
    return host, d


def test_render_config_fills_the_template_and_applies_overrides():
    template = ("etcd:\n  endpoints: localhost:{{ etcd_port(int): 2379 }}\n  data:\n    dir: {{ etcd_data_dir }}\n"
                "proxy:\n  ip:\n  port: {{ proxy_port(int): 19530 }}\ncommon:\n  session:\n    ttl: 30\n")
    import yaml

    doc = yaml.safe_load(render_config(template, {"common.session.ttl": 5, "grpc.client.maxBackoff": 1}))
    assert doc["etcd"] == {"endpoints": "127.0.0.1:2379", "data": {"dir": "/data/etcd"}}
    assert doc["proxy"] == {"ip": "", "port": 19530}          # an empty `ip:` stays empty, not null
    assert doc["common"]["session"]["ttl"] == 5 and doc["grpc"]["client"]["maxBackoff"] == 1


def test_standalone_serves_stops_on_sigterm_and_restarts_on_its_data(lab_dir):
    shared = lab_dir / "shared"
    with Topology() as topo:
        host, d = standalone_host(topo, lab_dir, "h1", 11, stop_timeout=30)
        api = d._api(timeout=90)
        assert api.inspect_container("milvus")["HostConfig"]["Init"] is True

        refused = ask(host, 0)
        assert refused["reason"] == f"Milvus at {host.addr}:19530 refused the connection (nothing listening)"
        api.start("milvus")
        up = ask(host, STANDALONE_SETTINGS["start_timeout"])
        assert up["ok"], up
        print(f"\ncold start: healthy after {up['took']:.1f}s")
        assert {p.name for p in shared.iterdir()} >= {"etcd", "rocksmq"}   # the data is on the shared dir

        pid = api.inspect_container("milvus")["State"]["Pid"]     # docker-init; Milvus is its child
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        milvus_pid = int(children[0])
        os.kill(milvus_pid, signal.SIGSTOP)
        try:
            hung = ask(host, 0, timeout=1.0)
        finally:
            os.kill(milvus_pid, signal.SIGCONT)
        assert (hung["ok"], hung["reason"]) == (False, "Milvus did not answer CheckHealth within 1.0s")

        t0 = time.monotonic()
        api.stop("milvus", timeout=30)
        took = time.monotonic() - t0
        code = api.inspect_container("milvus")["State"]["ExitCode"]
        print(f"docker stop: {took:.2f}s, exit code {code}")
        assert code != 137 and took < 25, (took, code)    # ended by SIGTERM, not by docker's SIGKILL

        api.start("milvus")
        assert ask(host, STANDALONE_SETTINGS["start_timeout"])["ok"]
        api.kill("milvus")
        api.wait("milvus", timeout=30)
        api.start("milvus")
        again = ask(host, STANDALONE_SETTINGS["start_timeout"])
        assert again["ok"], again
        print(f"restart after SIGKILL: healthy after {again['took']:.1f}s")
        api.close()


WRITE = """
import json, sys
from pymilvus import MilvusClient
uri, n = sys.argv[1], int(sys.argv[2])
c = MilvusClient(uri=uri, timeout=60)
c.create_collection("acked", dimension=4, consistency_level="Strong", timeout=120)
acked = []
for start in range(0, n, 100):        # acknowledged = insert returned; no flush
    c.insert("acked", [{"id": i, "vector": [float(i % 7)] * 4} for i in range(start, start + 100)], timeout=30)
    acked.extend(range(start, start + 100))
print(json.dumps({"acked": len(acked)}))
"""
READ = """
import json, sys, time
from pymilvus import MilvusClient
uri = sys.argv[1]
t0, last = time.monotonic(), ""
while time.monotonic() - t0 < 120:      # the collection loads after the restart
    try:
        c = MilvusClient(uri=uri, timeout=30)
        c.load_collection("acked", timeout=60)
        ids = [r["id"] for r in c.query("acked", filter="id >= 0", output_fields=["id"], limit=16384,
                                        consistency_level="Strong", timeout=30)]
        print(json.dumps({"ids": sorted(ids)}))
        break
    except Exception as exc:
        last = str(exc)[:200]
        time.sleep(1)
else:
    print(json.dumps({"error": last}))
"""


def test_acknowledged_unflushed_rows_survive_a_sigkill_and_a_takeover_by_another_host(lab_dir):
    """Issue 11, item 2 at the Milvus level: rows acknowledged by insert alone (no flush),
    then `docker kill` (SIGKILL) at once, then the other host's container on the same data:
    every acknowledged row is readable (Strong). One trial per run: evidence, not proof."""
    with Topology() as topo:
        (h1, d1), (h2, d2) = standalone_host(topo, lab_dir, "h1", 11), standalone_host(topo, lab_dir, "h2", 21)
        a1, a2 = d1._api(timeout=90), d2._api(timeout=90)
        a1.start("milvus")
        assert ask(h1, STANDALONE_SETTINGS["start_timeout"])["ok"]
        w = h1.run(sys.executable, "-c", WRITE, f"http://{h1.addr}:19530", "2000", timeout=300, check=False)
        assert w.returncode == 0, w.stderr[-2000:]
        assert json.loads(w.stdout.strip().splitlines()[-1])["acked"] == 2000
        a1.kill("milvus")                                  # at once, no flush, no grace
        a1.wait("milvus", timeout=30)
        a2.start("milvus")
        up = ask(h2, STANDALONE_SETTINGS["start_timeout"])
        assert up["ok"], up
        r = h2.run(sys.executable, "-c", READ, f"http://{h2.addr}:19530", timeout=300, check=False)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res.get("ids") == list(range(2000)), res.get("error") or f"{len(res['ids'])} of 2000 rows"
        print(f"\ntakeover after SIGKILL: healthy after {up['took']:.1f}s; 2000 of 2000 acknowledged rows read")
        a1.close()
        a2.close()


TAKEOVER = """
import json, sys, time
from havip.runtime.container import ContainerRuntime
from havip.runtime.lease import StorageLease
from havip.runtime.sessions import StaleSessionClearer, session_prefix
from havip.runtime.etcdclient import Gateway, b64, unb64

docker_url, lease_path = sys.argv[1], sys.argv[2]
lease = StorageLease(lease_path, "takeover-test")
assert lease.acquire().ok                      # what havip holds before it starts Milvus
lines = []

class Log:
    def info(self, event, **kw):
        lines.append({"event": event, **kw})
    warning = error = info

clearer = StaleSessionClearer("http://127.0.0.1:2379", "by-dev", 60, lambda: lease.held, log=Log())
runtime = ContainerRuntime(docker_url, "milvus", 5, after_start=clearer)
runtime.start()                                 # the daemon's start path: the sweep runs after docker start
t0 = time.monotonic()
while clearer.last is None and time.monotonic() - t0 < 90:
    time.sleep(0.1)
prefix = session_prefix("by-dev")
gw = Gateway(["http://127.0.0.1:2379"], timeout=2)
kvs = gw.call("kv/range", {"key": b64(prefix), "range_end": b64(prefix[:-1] + "0")}).get("kvs", [])
keys = {}
for kv in kvs:
    try:
        v = json.loads(unb64(kv["value"]))
    except ValueError:
        continue
    if isinstance(v, dict):
        keys[unb64(kv["key"])[len(prefix):]] = v["ServerID"]
res = clearer.last
print(json.dumps({"outcome": res and res.outcome, "reason": res and res.reason, "ours": res and res.ours,
                  "revoked": res and res.revoked, "log": lines, "keys": keys}))
"""


def test_takeover_clears_the_killed_servers_sessions_and_milvus_sees_them_go(lab_dir):
    """Issue 11: the sessions a killed server leaves in its embedded etcd. h1's server
    killed (SIGKILL), h2 takes the storage lease and starts its own through
    ContainerRuntime with the stale session sweep (the daemon's start path): the sweep
    names the old ServerID and revokes its sessions, Milvus logs the old nodes going
    (datacoord's `received datanode unregister` for the old ServerID, before any lease
    could expire), and every session left in etcd is the new server's."""
    with Topology() as topo:
        (h1, d1), (h2, d2) = standalone_host(topo, lab_dir, "h1", 11), standalone_host(topo, lab_dir, "h2", 21)
        a1, a2 = d1._api(timeout=90), d2._api(timeout=90)
        a1.start("milvus")
        assert ask(h1, STANDALONE_SETTINGS["start_timeout"])["ok"]
        a1.kill("milvus")
        a1.wait("milvus", timeout=30)
        p = h2.run(sys.executable, "-c", TAKEOVER, d2.url, str(lab_dir / "shared" / ".havip-lease"),
                   timeout=180, check=False, cwd=REPO)
        assert p.returncode == 0, p.stderr[-3000:]
        res = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"\nsweep: {res['reason']}")
        assert res["outcome"] == "cleared", res
        old = res["ours"] - 1
        assert {"rootcoord", "datacoord", "querycoord", "indexcoord", f"querynode-{old}", f"datanode-{old}"} \
            <= set(res["revoked"]), res["revoked"]
        assert res["reason"].startswith(f"revoked the leases of {len(res['revoked'])} stale Milvus session(s) of "
                                        f"ServerID [{old}]")
        assert set(res["keys"].values()) == {res["ours"]}, res["keys"]      # only ours is left
        assert ask(h2, STANDALONE_SETTINGS["start_timeout"])["ok"]
        log = a2.logs("milvus").decode(errors="replace")
        assert f'["received datanode unregister"] [address={h1.addr}:21124] [serverID={old}]' in log
        assert "node not match" not in log
        a1.close()
        a2.close()
