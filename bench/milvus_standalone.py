"""Milvus standalone (2.3.5, the lab's real server) on shared data: start-up and stop.

One lab host (a network namespace with its own dockerd), the standalone image
(havip.lab.standalone), one container with its data on a fresh directory. Measured, each
from `docker start` to the first healthy CheckHealth (havip's own check, 0.5 s deadline,
polled every 0.1 s) and to the first answered list_collections (pymilvus), and each stop
from `docker stop` (SIGTERM through docker-init, then SIGKILL after the grace) to exit:

  cold        first start on an empty data directory
  warm        restart after a clean stop (SIGTERM)
  after kill  restart after `docker kill` (SIGKILL), the takeover case
  second host the same data started by another host's container after a kill (the
              recipe's takeover: the old server's sessions name the other address)

Usage (root): python bench/milvus_standalone.py [--out docs/milvus-standalone-startup.json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from havip.lab.docker import Dockerd  # noqa: E402
from havip.lab.netns import Topology  # noqa: E402
from havip.lab.standalone import build_standalone_image, create_standalone_container  # noqa: E402

WAIT = r"""
import json, sys, time
from havip.checks.milvus_grpc import check_health
addr, budget = sys.argv[1], float(sys.argv[2])
t0 = time.monotonic()
healthy = listed = None
last = ""
while time.monotonic() - t0 < budget:
    if healthy is None:
        ok, last = check_health(addr, 0.5)
        if ok:
            healthy = time.monotonic() - t0
    if healthy is not None:
        try:
            from pymilvus import MilvusClient
            MilvusClient(uri=f"http://{addr}", timeout=2).list_collections()
            listed = time.monotonic() - t0
            break
        except Exception as exc:
            last = str(exc)[:200]
    time.sleep(0.1)
print(json.dumps({"healthy": healthy, "listed": listed, "last": last}))
"""


def wait_up(host, addr: str, budget: float) -> dict:
    t0 = time.monotonic()
    proc = host.run(sys.executable, "-c", WAIT, addr, str(budget), timeout=budget + 60, check=False)
    res = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"error": proc.stderr[-400:]}
    res["python_start"] = round(time.monotonic() - t0, 2)
    return res


def timed_start(d: Dockerd, host, name: str, budget: float) -> dict:
    api = d._api()
    t0 = time.monotonic()
    api.start(name)
    started = time.monotonic() - t0
    api.close()
    res = wait_up(host, f"{host.addr}:19530", budget)
    res["docker_start"] = round(started, 2)
    return res


def timed_stop(d: Dockerd, name: str, grace: int, kill: bool = False) -> dict:
    api = d._api(timeout=grace + 60)
    t0 = time.monotonic()
    if kill:
        api.kill(name)
        api.wait(name, timeout=60)
    else:
        api.stop(name, timeout=grace)
    took = time.monotonic() - t0
    code = api.inspect_container(name)["State"]["ExitCode"]
    api.close()
    return {"took": round(took, 2), "exit_code": code}


def run(grace: int, budget: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="hvs", dir="/tmp"))
    shared = work / "shared"
    shared.mkdir()
    out: dict = {}
    with Topology("hvs" + secrets.token_hex(2)) as topo:
        hosts = [topo.add_host("h1", 11, ipv6=False), topo.add_host("h2", 21, ipv6=False)]
        engines = []
        try:
            for h in hosts:
                d = Dockerd(h, work / h.name)
                engines.append(d)
                topo.on_close(d.stop)
                d.start()
                t0 = time.monotonic()
                build_standalone_image(d)
                out.setdefault("image_import_s", []).append(round(time.monotonic() - t0, 1))
                create_standalone_container(d, "milvus", shared, stop_timeout=grace)
            d1, d2 = engines
            h1, h2 = hosts
            out["cold"] = timed_start(d1, h1, "milvus", budget)
            print("cold", out["cold"], flush=True)
            out["stop_sigterm"] = timed_stop(d1, "milvus", grace)
            print("stop", out["stop_sigterm"], flush=True)
            out["warm"] = timed_start(d1, h1, "milvus", budget)
            print("warm", out["warm"], flush=True)
            out["kill"] = timed_stop(d1, "milvus", grace, kill=True)
            out["after_kill"] = timed_start(d1, h1, "milvus", budget)
            print("after kill", out["after_kill"], flush=True)
            timed_stop(d1, "milvus", grace, kill=True)
            out["second_host_after_kill"] = timed_start(d2, h2, "milvus", budget)
            print("second host", out["second_host_after_kill"], flush=True)
            out["stop_second"] = timed_stop(d2, "milvus", grace)
            out["data_mib"] = round(sum(f.stat().st_size for f in shared.rglob("*") if f.is_file()) / 2**20, 1)
        finally:
            for d in engines:
                d.stop()
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grace", type=int, default=10, help="docker stop's grace before SIGKILL")
    ap.add_argument("--budget", type=float, default=240, help="how long to wait for a start")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = run(args.grace, args.budget)
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
