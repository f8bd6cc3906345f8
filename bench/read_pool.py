"""The read pool side by side: direct to one node, the recipe's nginx config, havip's pool.

One PoolLab (havip.lab.poollab): a writer, three milvus-lite read nodes holding the same
collection, and a pool host running `havip pool run` (its nginx on :19540). On the
same pool host the benchmark also runs, with Debian's nginx:

- the recipe's config ("Using Nginx to load balance Milvus"): a `stream {}` TCP proxy,
  with its syntax errors fixed and nothing else (tests/fixtures/nginx-recipe/);
- for the 1- and 2-member throughput runs, nginx with the config havip renders for
  those members (the data plane only; membership does not change during them).

The same client (havip.lab.pool_client, pymilvus, one dedicated connection per thread,
5 s deadline) runs every measurement:

- latency: one client process with a connection to every path, LAT_N searches through
  each from one thread, in many short slices round robin over the paths (pool_client
  `compare`), so the machine's background load falls on each path alike; median, p90,
  p99, and the load average before and after;
- throughput: N searches from T threads (each its own connection), searches per second,
  with 1, 2 and 3 members behind each proxy;
- member kill: N searches from T threads while one member is SIGKILLed after a fifth of
  them; failed searches (after pymilvus' own retries), searches slower than 1 s, and the
  slowest. The member is restarted (and its collection loaded) between runs. The kills
  are run twice: with pymilvus as it comes (it retries UNAVAILABLE within its deadline)
  and with its retry off (`retry_times=0`, no deadline), where every RPC that failed
  at the proxy is a failed search: what the proxy itself guarantees.

Usage (root): python bench/read_pool.py [--n 2000] [--threads 4] [--out docs/benchmarks-read-pool.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from string import Template

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from havip.lab.netns import wait_for  # noqa: E402
from havip.lab.poollab import PoolLab  # noqa: E402
from havip.pool.config import parse  # noqa: E402
from havip.pool.render import render  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE_TMPL = REPO / "tests" / "fixtures" / "nginx-recipe" / "recipe-fixed.conf.tmpl"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HANG = 8.0          # seconds a hung member stays stopped: longer than the client's 5 s deadline


def _nginx(lab: PoolLab, name: str, text: str) -> str:
    """Start nginx with `text` in the pool host's namespace (own prefix); its URI is the caller's."""
    prefix = lab.workdir / name
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(text.replace("@PREFIX@", str(prefix)))
    t = subprocess.run([NGINX, "-t", "-q", "-c", str(conf), "-p", f"{prefix}/"], capture_output=True, text=True)
    if t.returncode:
        raise RuntimeError(f"{name}: nginx -t: {t.stderr}")
    lab.hosts["p"].popen([NGINX, "-c", str(conf), "-p", f"{prefix}/", "-g", "daemon off;"],
                         stdout=subprocess.DEVNULL, stderr=open(prefix / "stderr.log", "w"))
    return str(conf)


def recipe_conf(lab: PoolLab, port: int, members: list[str]) -> str:
    servers = "\n".join(f"        server {lab.addr(m)}; # Ip address for {m}" for m in members)
    return Template(RECIPE_TMPL.read_text()).substitute(prefix="@PREFIX@", listen=f"0.0.0.0:{port}", servers=servers)


def havip_conf(lab: PoolLab, port: int, members: list[str]) -> str:
    cfg = parse({**lab.pool_config(), "listen": f"0.0.0.0:{port}", "read_nodes": [lab.addr(m) for m in members],
                 "status_file": "/nonexistent/unused.json"}, local=lambda h: False)
    return render(cfg, {lab.addr(m): True for m in members}, prefix="@PREFIX@")


def _wait_port(lab: PoolLab, uri: str) -> None:
    wait_for(lambda: _try(lab, uri), 30, interval=0.2, what=f"{uri} answering")


def _try(lab: PoolLab, uri: str) -> bool:
    try:
        return lab.client("searches", wait=60, uri=uri, n=1, threads=1, timeout=2.0)["ok"] == 1
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


def searches(lab: PoolLab, uri: str, n: int, threads: int) -> dict:
    return _summary(lab.client("searches", wait=600, uri=uri, n=n, threads=threads))


def _summary(r: dict) -> dict:
    lat = sorted(r["latencies"])
    r["median_ms"] = statistics.median(lat) * 1000 if lat else float("nan")
    r["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
    r["rate"] = len(lat) / r["seconds"] if r.get("seconds") else (
        len(lat) / (r["ended"] - r["began"]) if r["ended"] > r["began"] else float("nan"))
    return r


def interleaved(lab: PoolLab, uris: dict[str, str], n: int, threads: int, rounds: int) -> dict[str, dict]:
    """Each target's searches in `rounds` slices, round robin over the targets: the
    machine's background load (shared CPUs) falls on every target alike."""
    acc = {k: {"ok": 0, "failed": 0, "latencies": [], "seconds": 0.0} for k in uris}
    for _ in range(rounds):
        for k, uri in uris.items():
            r = lab.client("searches", wait=600, uri=uri, n=n // rounds, threads=threads)
            a = acc[k]
            a["ok"] += r["ok"]
            a["failed"] += r["failed"]
            a["latencies"] += r["latencies"]
            a["seconds"] += r["ended"] - r["began"]
    return {k: _summary({**a, "began": 0, "ended": 0}) for k, a in acc.items()}


def latency(lab: PoolLab, uris: dict[str, str], n: int, rounds: int) -> dict[str, dict]:
    """One process, one connection per path, `rounds` slices round robin over the paths."""
    la0 = os.getloadavg()[0]
    r = lab.client("compare", wait=3600, uris=uris, n=n, rounds=rounds)
    la1 = os.getloadavg()[0]
    out = {}
    for k, lat in r["latencies"].items():
        s = _summary({"ok": len(lat), "failed": r["failed"][k], "latencies": lat, "began": 0, "ended": 0})
        s["p90_ms"] = sorted(lat)[min(len(lat) - 1, int(len(lat) * 0.9))] * 1000
        out[k] = s
    out["_load"] = (la0, la1)
    return out


def fault_run(lab: PoolLab, uri: str, n: int, threads: int, victim: str, tmp: Path, fault: str,
              rate: float, retries: bool = True) -> dict:
    go, out = tmp / f"go-{victim}-{time.time_ns()}", tmp / f"kill-{time.time_ns()}.json"
    proc = lab.client_bg("searches", out, uri=uri, n=n, threads=threads, timeout=5.0, go_file=str(go),
                         retries=retries)
    time.sleep(3)          # connections made and warmed
    go.touch()
    time.sleep(n / 5 / rate)        # about a fifth of the searches, at the measured rate
    if fault == "kill":
        lab.kill(victim)
    else:
        lab.signal(victim, signal.SIGSTOP)
        time.sleep(HANG)
        lab.signal(victim, signal.SIGCONT)
    proc.wait(600)
    r = json.loads(out.read_text().strip().splitlines()[-1])
    lat = r["latencies"]
    r["slow"] = sum(1 for x in lat if x > 1.0)
    r["max_ms"] = max(lat) * 1000 if lat else float("nan")
    if fault == "kill":
        lab.restart(victim)
    lab.wait_member(victim, True, 60)
    return r


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    ng = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip().removeprefix("nginx version: ")
    from importlib.metadata import version

    return (f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}, Python {platform.python_version()}, "
            f"{ng}, milvus-lite {version('milvus-lite')}, pymilvus {version('pymilvus')}")


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "havip", "bench"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return head + (" (with uncommitted changes)" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--kills", type=int, default=2, help="rounds of faults (kill, kill without client retry, hang)")
    ap.add_argument("--rounds", type=int, default=4, help="slices the throughput runs are cut in")
    ap.add_argument("--lat-n", type=int, default=5000, help="searches per path in the latency comparison")
    ap.add_argument("--lat-rounds", type=int, default=50, help="slices the latency comparison is cut in")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks-read-pool.md"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hvpb", dir="/tmp"))
    lab = PoolLab(work, read_timeout=1.0)
    t0 = time.monotonic()
    try:
        lab.up()
        p = lab.hosts["p"].addr
        direct = lab.uri("r1")
        targets = {"direct to r1": {1: direct}, "recipe (stream)": {}, "havip pool": {3: lab.pool_uri}}
        for k in (1, 2, 3):
            _nginx(lab, f"recipe{k}", recipe_conf(lab, 19590 + k, lab.readers[:k]))
            targets["recipe (stream)"][k] = f"http://{p}:{19590 + k}"
            if k < 3:
                _nginx(lab, f"havip{k}", havip_conf(lab, 19550 + k, lab.readers[:k]))
                targets["havip pool"][k] = f"http://{p}:{19550 + k}"
        for t in targets.values():
            for uri in t.values():
                _wait_port(lab, uri)
        lat_uris = {"direct to r1": direct, "recipe (stream), r1 only": targets["recipe (stream)"][1],
                    "havip pool, r1 only": targets["havip pool"][1],
                    "recipe (stream), 3 members": targets["recipe (stream)"][3],
                    "havip pool, 3 members": lab.pool_uri}
        lat = latency(lab, lat_uris, args.lat_n, args.lat_rounds)
        thr_k = {k: interleaved(lab, {name: t[k] for name, t in targets.items() if k in t}, args.n, args.threads,
                                args.rounds) for k in (1, 2, 3)}
        thr = {name: {k: thr_k[k][name] for k in (1, 2, 3) if name in thr_k[k]} for name in targets}
        kills = {"recipe (stream)": [], "havip pool": []}
        for i in range(args.kills):
            victim = lab.readers[i % 3]
            # The recipe's hang is not run without the client's retry: with no deadline, a
            # call pinned to the stopped node by its TCP relay waits until the node resumes.
            for fault, retries in (("kill", True), ("kill", False), ("hang", True), ("hang", False)):
                for name, uri in (("recipe (stream)", targets["recipe (stream)"][3]), ("havip pool", lab.pool_uri)):
                    if fault == "hang" and not retries and name != "havip pool":
                        continue
                    r = fault_run(lab, uri, args.n, args.threads, victim, work, fault, thr[name][3]["rate"], retries)
                    kills[name].append({**r, "fault": fault, "victim": victim, "retries": retries})
        st = lab.status()
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - t0
    write(args, lat, thr, kills, st, took)


def write(args, lat: dict, thr: dict, kills: dict, st: dict, took: float) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    la = lat.pop("_load")
    d = lat["direct to r1"]["median_ms"]
    out = [
        "# Read pool benchmark: direct, the recipe's nginx, havip's pool",
        "",
        f"Measured {now} on {machine()}; commit {commit()}; `python bench/read_pool.py --n {args.n} "
        f"--threads {args.threads} --kills {args.kills} --rounds {args.rounds} --lat-n {args.lat_n} "
        f"--lat-rounds {args.lat_rounds}` ({took:.0f} s, `make bench`).",
        "",
        "Everything runs in the lab's network namespaces (havip.lab.poollab): three milvus-lite read nodes "
        "(collection `havip_pool`, 1,000 rows of 8 dimensions, the same on each), a writer, a pool host "
        "with nginx, and a client. The client is the same for every row: pymilvus, one dedicated "
        "connection per thread, 5 s deadline (pymilvus retries UNAVAILABLE within it). "
        "The recipe's config is its `stream {}` TCP proxy with the syntax errors fixed and nothing "
        "else (tests/fixtures/nginx-recipe/recipe-fixed.conf.tmpl). havip's pool is `havip pool run` "
        "with checks every 0.5 s, rise 2, fall 2, nginx read timeout 1 s. The 1- and 2-member rows "
        "of havip use nginx with the config havip renders for those members.",
        "",
        f"Throughput runs are cut into {args.rounds} slices taken round robin over the paths, "
        "so the background load of this shared machine falls on each path alike. The machine has 2 "
        "cores shared with other work: ratios between the rows of one run hold, absolute figures do not.",
        "",
        "## Latency (one thread)",
        "",
        f"One client process holds a connection to every path and sends {args.lat_n} searches through "
        f"each, in {args.lat_rounds} slices round robin over the paths. With r1 only behind each proxy, "
        "the rows compare the same node with and without the hop; with 3 members, each node serves a "
        f"third of the calls. Load average (1 min) {la[0]:.2f} before, {la[1]:.2f} after.",
        "",
        "| path | searches | failed | median ms | p90 ms | p99 ms | median over direct ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in lat.items():
        out.append(f"| {name} | {r['ok']} | {r['failed']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                   f"{r['p99_ms']:.2f} | {r['median_ms'] - d:+.2f} |")
    out += ["", f"## Throughput ({args.threads} threads, searches per second)", "",
            "| path | 1 member | 2 members | 3 members |", "|---|---:|---:|---:|"]
    for name, rows in thr.items():
        cells = [f"{rows[k]['rate']:.0f}" + (f" ({rows[k]['failed']} failed)" if rows[k]["failed"] else "")
                 if k in rows else "-" for k in (1, 2, 3)]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", f"## A member killed (SIGKILL) or hung (SIGSTOP for {HANG:g} s) during {args.n} searches "
            f"from {args.threads} threads", "",
            "\"client retry\" yes is pymilvus as it comes (it retries UNAVAILABLE within its 5 s deadline); "
            "no is `retry_times=0` and no deadline: every RPC the proxy failed is a failed search.", "",
            "| path | fault | victim | client retry | searches ok | failed | slower than 1 s | slowest ms | errors seen |",
            "|---|---|---|---|---:|---:|---:|---:|---|"]
    for name, runs in kills.items():
        for r in runs:
            errs = "; ".join(sorted({e[1][:90] for e in r["errors"]}))[:200] or "-"
            out.append(f"| {name} | {r['fault']} | {r['victim']} | {'yes' if r['retries'] else 'no'} | {r['ok']} | "
                       f"{r['failed']} | {r['slow']} | {r['max_ms']:.0f} | {errs} |")
    out += ["", "Direct to one node is not in the kill table: killing that node fails every search "
            "until it is back.", ""]
    if st:
        out += ["Requests each member answered through havip's pool over the whole run "
                "(havipctl pool status): " + ", ".join(f"{m['address']} {m['requests']}" for m in st["members"])
                + f"; writer {st['writer']['requests']}.", ""]
    out += [NOTES]
    Path(args.out).write_text("\n".join(out))
    print("\n".join(out))


NOTES = """## Reading the numbers

- The pool's overhead over a direct connection is one nginx hop on the same machine
  (HTTP/2 in, a kept-alive HTTP/2 connection out). The like-for-like row is "havip pool,
  r1 only": the same node, one hop more. The recipe's `stream` proxy is a plain TCP relay,
  so its per-call cost is lower; what it cannot do is in the fault table and in
  docs/read-pool.md: it balances connections, not calls (each client connection is pinned
  to one node), it never sees a gRPC call fail, and it cannot route writes.
- Where the hop's cost goes (bench/pool_overhead.py, `make bench-pool-overhead`, below):
  the smallest config that can proxy gRPC (one `grpc_pass`, keepalive, no log) costs as
  much as havip's render, within this machine's noise; one worker instead of two, no
  access log or a buffered one, round robin instead of least_conn, a smaller
  `grpc_buffer_size` and no socket keepalive each moved the median by less than that
  noise, and none consistently in one direction, so the render keeps its settings.
  Without upstream `keepalive` the hop costs about 1 ms more (a TCP and HTTP/2 handshake
  per call): keepalive is the one setting that matters (with it, r1 accepted about one
  new connection per 100 calls more than the recipe's relay, which opens one per client
  connection, see the table). What is left is nginx terminating HTTP/2 and
  gRPC and originating them again, on cores the client and the three milvus-lite servers
  also use.
- With 3 members, each milvus-lite node serves a third of the calls on a 2-core machine
  they share: one thread's calls wake a different server process each time, which costs
  more than the hop (the same render with r1, r2 and r3 and no havip daemon running
  costs the same), so that row is not the hop's overhead. On real hosts each read node
  has its own CPUs.
- Throughput on this machine is bound by its cores, shared with the three milvus-lite
  servers, nginx, the client and other work: a second and third member add nothing, and
  the paths' rates move by more than their differences from one run to the next (compare
  the main table with the variants' table below, measured in another run). On real hosts
  each read node and the pool's nginx have their own CPUs.
- Killed member, client retry off: both proxies lose the calls that were in flight on
  the victim at that instant (one per client connection at most; 0 to 2 of 2000 here), and
  nothing else: nginx sends to another member every call it could not deliver
  (refused connection), and cannot resend one it delivered (it streams gRPC request
  bodies; docs/read-pool.md, "What is guaranteed"). pymilvus retries UNAVAILABLE within
  its deadline, so with its retry on no search failed.
- A hung member (SIGSTOP: the kernel still accepts connections, nobody answers) is what
  a TCP proxy cannot see at all: every call on a connection pinned to it waits for the
  client's deadline (the recipe's failed searches). In havip's pool a read sent to it is
  answered UNAVAILABLE after nginx's read timeout (1 s here, the slow searches counted),
  which pymilvus retries on a healthy member, and the member leaves the pool after
  interval x fall (about 1 s), so later reads do not go there at all. With the client's
  retry off, the pool lost only the calls in flight on the hung member (2 of 2000 each
  time), each after the 1 s read timeout: `least_conn` sends no new call to a member
  whose calls are stuck (it has the most active ones), and the first timed-out call
  marks it failed for every worker (`max_fails=1` in a `zone`) until the checks take it out.
"""


if __name__ == "__main__":
    main()
