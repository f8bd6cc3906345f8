"""What docker stop's grace (havip's `milvus.stop_timeout`) buys on the real Milvus server.

One MilvusLab with Milvus 2.3.5 standalone (the lab's Milvus settings, start_timeout
150 s). For each grace in GRACES, both havips restart with `stop_timeout` = grace, then
planned switchovers (`havipctl failover` on the master), alternating h1 -> h2 -> h1 ...:

- "writes": the client inserts 100 rows and flushes, 100 rows without a flush, then
  writes in the background (10 rows every 0.2 s, acknowledged when the insert returns,
  no flush) right through the switchover, as a client that does not stop for it;
- "idle": the same two batches, then nothing while the switchover runs.

Per trial: how long the old master's stop took (havip's own figure) and how it ended
(the container's exit code: 137 = Docker's SIGKILL after the grace, 134 = Milvus 2.3.5's
own end after SIGTERM, a panic in its etcd client close), the new master's start-up (from
docker start to a healthy CheckHealth), the outage (failover request -> first successful
search through the VIP; with writes also the writer's own window), acknowledged rows
missing from a Strong read through the VIP, by kind (flushed, unflushed, background), and
whether the Sampler saw two Milvus at once. Grace 0 is `docker stop -t 0`: SIGTERM and
SIGKILL at once, i.e. a kill.

Usage (root): python bench/stop_grace.py [--graces 30,10,5,0] [--trials 2] [--idle 1]
              [--out docs/milvus-standalone-stopgrace.json [--append]]
       python bench/stop_grace.py render FILE
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START_TIMEOUT = 150


def ctl(lab, host: str, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    sock = lab.havipds[host].config["control"]["socket"]
    return subprocess.run([sys.executable, "-m", "havip.ctl", "-s", sock, *args], capture_output=True, text=True,
                          timeout=timeout)


def status(lab, host: str) -> dict:
    return json.loads(ctl(lab, host, "status", "--json", timeout=30).stdout)


def restart_with(lab, grace: float) -> str:
    """Both havips stopped (backup first), reconfigured, started h1 then h2; h1 serves."""
    from havip.lab.netns import wait_for

    for d in sorted(lab.havipds.values(), key=lambda d: d.state() == "master"):
        if d.running:
            d.stop(timeout=grace + 60)
    for d in lab.havipds.values():
        d.config["milvus"]["stop_timeout"] = grace
    lab.start_havip("h1")
    lab.start_havip("h2")
    lab.wait_serving("h1", START_TIMEOUT + 30)
    wait_for(lambda: lab.havipds["h2"].state() == "backup", 60, what="h2 backup")
    return "h1"


def trial(lab, client, sampler, old: str, grace: float, writes: bool) -> dict:
    from havip.lab.client import Client
    from havip.lab.milvuslab import HAVIP_HOSTS
    from havip.lab.netns import wait_for

    new = next(h for h in HAVIP_HOSTS if h != old)
    flushed = set(client.insert(100, flush=True))
    unflushed = set(client.insert(100, flush=False))
    overl0 = len(sampler.overlaps)
    if writes:
        client.traffic_start(batch=10, period=0.2, flush=False)
        wait_for(lambda: len(client.traffic_sync()["acked"]) >= 5, 60, interval=0.1, what="writer going")
    t0 = time.time()
    res = ctl(lab, old, "failover")
    t_done = time.time()
    lab.wait_serving(new, START_TIMEOUT + 30)
    reached = client.wait_reachable(60)
    report = None
    if writes:
        wait_for(lambda: any(a[2] > reached for a in client.traffic_sync()["acked"]), 60, interval=0.2,
                 what="an acknowledged batch after the switchover")
        report = client.traffic_stop()
    present = set(client.ids(wait=120))
    background = set()
    for start, n, *_ in (report["acked"] if report else []):
        background.update(range(start, start + n))
    st_old, st_new = status(lab, old), status(lab, new)
    info = lab.container_info(old)["State"]
    writer_window = None
    if report:
        fails = [at for at, ok, _ in report["events"] if not ok and at >= t0]
        back = Client.recovered_at(report, t0)
        if fails and back:
            writer_window = round(back - fails[0], 2)
    return {"grace": grace, "writes": writes, "from": old, "to": new, "failover_rc": res.returncode,
            "failover_said": res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr.strip()[-200:],
            "stop_s": round(st_old["container_timings"].get("stop", -1), 2), "exit_code": info["ExitCode"],
            "killed_by_docker": info["ExitCode"] == 137, "handover_s": round(t_done - t0, 2),
            "new_start_s": round(st_new["container_timings"].get("ready", -1), 2),
            "outage_s": round(reached - t0, 2), "writer_window_s": writer_window,
            "lost_flushed": len(flushed - present), "lost_unflushed": len(unflushed - present),
            "lost_background": len(background - present), "acked_background": len(background),
            "lost_total": len(client.acked - present), "acked_total": len(client.acked),
            "two_milvus_samples": len(sampler.overlaps) - overl0, "at": round(t0, 1)}


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(),
            "commit": rev + (" (with uncommitted changes)" if dirty else ""), "load": os.getloadavg()}


def main() -> None:
    from havip.lab.milvuslab import MilvusLab
    from havip.lab.sampler import Sampler

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graces", default="30,10,5,0")
    ap.add_argument("--trials", type=int, default=2, help="switchovers under writes per grace")
    ap.add_argument("--idle", type=int, default=1, help="switchovers without writes per grace")
    ap.add_argument("--out", default=None)
    ap.add_argument("--append", action="store_true", help="add this run to the runs already in --out")
    args = ap.parse_args()
    graces = [float(g) for g in args.graces.split(",")]
    workdir = tempfile.mkdtemp(prefix="hvg", dir="/tmp")
    lab = MilvusLab(f"{workdir}/lab", prefix="hvg" + secrets.token_hex(2), milvus="standalone")
    lab.settings["start_timeout"] = START_TIMEOUT
    info = machine()
    results: list[dict] = []
    client = sampler = None
    try:
        lab.up(timeout=START_TIMEOUT + 30)
        sampler = Sampler(lab)
        sampler.start()
        client = lab.client()
        client.create()
        for grace in graces:
            master = restart_with(lab, grace)
            for writes in [True] * args.trials + [False] * args.idle:
                r = trial(lab, client, sampler, master, grace, writes)
                master = r["to"]
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        if sampler is not None:
            sampler.stop()
        if client is not None:
            client.close()
        lab.kill_milvus()
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)
    info["load_after"] = os.getloadavg()
    runs = [{"machine": info, "trials": results}]
    if args.out and args.append and Path(args.out).exists():
        runs = load_runs(Path(args.out)) + runs
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(render(info, results))


def load_runs(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    return data["runs"] if "runs" in data else [data]


def render(info: dict, results: list[dict]) -> str:
    rows = ["| grace | client | trial | stop took | ended by | new server healthy after | outage (request -> "
            "first search) | writer's window | acknowledged rows lost (flushed / unflushed / background) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ended = "Docker's SIGKILL (137)" if r["killed_by_docker"] else f"itself ({r['exit_code']})"
        ww = "-" if r["writer_window_s"] is None else f"{r['writer_window_s']:.1f} s"
        rows.append(f"| {r['grace']:g} s | {'writes' if r['writes'] else 'idle'} | {r['from']} -> {r['to']} | "
                    f"{r['stop_s']:.1f} s | {ended} | {r['new_start_s']:.1f} s | {r['outage_s']:.1f} s | {ww} | "
                    f"{r['lost_flushed']} / {r['lost_unflushed']} / {r['lost_background']} "
                    f"(of 100 / 100 / {r['acked_background']}) |")
    head = (f"Measured {info['when']} on {info['cores']} cores ({info['cpu']}), Linux {info['kernel']}, "
            f"havip {info['commit']}, load {' '.join(f'{x:.2f}' for x in info['load'])}.")
    return head + "\n\n" + "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["render"]:          # render FILE: the tables of every run in it
        print("\n\n".join(render(r["machine"], r["trials"]) for r in load_runs(Path(sys.argv[2]))))
    else:
        main()
