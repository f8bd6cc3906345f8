"""Where the read pool's per-call overhead goes: nginx variants side by side, one node.

One PoolLab without the pool daemon (havip.lab.poollab): r1 behind several nginx
instances on the pool host, each a variant of the config havip renders for r1 alone
(plus the recipe's `stream` proxy), and one client process that opens a connection to
every path and runs N searches through each in R slices, round robin over the paths
(havip.lab.pool_client `compare`), so the machine's background load falls on each alike.

Usage (root): python bench/pool_overhead.py [--n 6000] [--rounds 20] [--variants a,b,...]
Prints a table (median, p90, p99, and median over direct) and the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.read_pool import _nginx, _wait_port, havip_conf, recipe_conf  # noqa: E402
from havip.lab.poollab import PoolLab  # noqa: E402


def _sub(text: str, old: str, new: str) -> str:
    out, n = re.subn(old, new, text)
    if not n:
        raise ValueError(f"variant: {old!r} not in the render")
    return out


# name -> transform of havip's render (r1 only)
VARIANTS = {
    "havip": lambda t: t,
    "1 worker": lambda t: _sub(t, r"worker_processes \S+;", "worker_processes 1;"),
    "no access log": lambda t: _sub(t, r"access_log \S+ havip_pool;", "access_log off;"),
    "buffered log": lambda t: _sub(t, r"(access_log \S+ havip_pool);", r"\1 buffer=64k flush=1s;"),
    "round robin": lambda t: _sub(t, r"\n\s*least_conn;", ""),
    "no upstream keepalive": lambda t: _sub(t, r"\n\s*keepalive \d+;", ""),
    "grpc_buffer_size 8k": lambda t: _sub(t, r"grpc_buffer_size 64k;", "grpc_buffer_size 8k;"),
    "no socket keepalive": lambda t: _sub(t, r"\n\s*grpc_socket_keepalive on;", ""),
    "1 worker + buffered log": lambda t: VARIANTS["buffered log"](VARIANTS["1 worker"](t)),
    "minimal": None,       # the smallest grpc_pass config: the floor of an HTTP/2 + gRPC hop
    "3 members": None,     # havip's render for r1, r2, r3 (no daemon): calls spread over three nodes
}

MINIMAL = """\
worker_processes 1;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path @PREFIX@/tmp/body;
    proxy_temp_path @PREFIX@/tmp/proxy;
    fastcgi_temp_path @PREFIX@/tmp/fastcgi;
    uwsgi_temp_path @PREFIX@/tmp/uwsgi;
    scgi_temp_path @PREFIX@/tmp/scgi;
    upstream u { server $member; keepalive 8; }
    server {
        listen 0.0.0.0:$port http2;
        location / { grpc_pass grpc://u; }
    }
}
"""


def _stats(lat: list[float]) -> dict:
    s = sorted(lat)
    q = lambda p: s[min(len(s) - 1, int(len(s) * p))] * 1000  # noqa: E731
    return {"n": len(s), "median": statistics.median(s) * 1000, "p90": q(0.90), "p99": q(0.99)}


def _opens(lab: PoolLab) -> int:
    out = lab.hosts["r1"].run("nstat", "-az", "TcpPassiveOpens").stdout
    return int(out.split("TcpPassiveOpens")[1].split()[0])


def throughput(lab: PoolLab, uris: dict[str, str], n: int, threads: int, rounds: int) -> dict:
    """Each path in `rounds` slices of n/rounds searches from `threads` connections (one
    client process per slice, its start-up not timed), round robin over the paths."""
    acc = {k: {"calls": 0, "seconds": 0.0, "opens": 0, "failed": 0} for k in uris}
    for _ in range(rounds):
        for k, uri in uris.items():
            o = _opens(lab)
            r = lab.client("searches", wait=600, uri=uri, n=n // rounds, threads=threads)
            a = acc[k]
            a["opens"] += _opens(lab) - o - (threads if k == "direct" else 0)     # not the client's own
            a["calls"] += r["ok"]
            a["failed"] += r["failed"]
            a["seconds"] += r["ended"] - r["began"]
    return {k: {"rate": a["calls"] / a["seconds"], "opens_per_1000": max(0, a["opens"]) * 1000 / a["calls"],
                "failed": a["failed"]} for k, a in acc.items()}


def report(args, res: dict) -> list[str]:
    from datetime import datetime, timezone

    from bench.read_pool import commit

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    la = res["load"]
    out = ["## Where the hop's cost goes: nginx variants side by side", "",
           f"Measured {now}, same machine; commit {commit()}; `python bench/pool_overhead.py --n {args.n} "
           f"--rounds {args.rounds}{' --loopback' if args.loopback else ''}"
           f"{f' --throughput {args.throughput}' if args.throughput else ''}` ({res['seconds']:.0f} s); load "
           f"average (1 min) {la[0][0]:.2f} before, {la[1][0]:.2f} after.", "",
           "r1 behind one nginx per variant of the config havip renders for r1 alone (each row changes one "
           "thing; \"minimal\" is the smallest config that proxies gRPC: one `grpc_pass`, `keepalive`, no log; "
           "\"3 members\" is havip's render for r1, r2 and r3, with no havip daemon running). One client process, "
           "one connection per path, one thread, the searches in slices round robin over the paths."]
    for where in ("bridge", "loopback"):
        if where not in res:
            continue
        d = res[where]["direct"]["median"]
        out += ["", ("The client in its own namespace, over the lab's bridge:" if where == "bridge" else
                     "The client on the pool host itself, to nginx over 127.0.0.1 (direct: still over the bridge "
                     "to r1):"), "",
                "| path | searches | median ms | p90 ms | p99 ms | median over direct ms |",
                "|---|---:|---:|---:|---:|---:|"]
        for k, s in res[where].items():
            out.append(f"| {k} | {s['n']} | {s['median']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | "
                       f"{s['median'] - d:+.2f} |")
    if "throughput" in res:
        out += ["", f"{args.throughput} threads, each its own connection (searches per second; new TCP connections "
                "r1 accepted per 1,000 calls, the client's own to r1 not counted: the stream proxy opens one "
                "per client connection, havip's nginx one when a kept-alive connection was closed):", "",
                "| path | searches/s | r1 accepted per 1,000 calls | failed |", "|---|---:|---:|---:|"]
        for k, t in res["throughput"].items():
            out.append(f"| {k} | {t['rate']:.0f} | {t['opens_per_1000']:.1f} | {t['failed']} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--loopback", action="store_true", help="also run the client on the pool host over 127.0.0.1")
    ap.add_argument("--throughput", type=int, default=0, metavar="THREADS",
                    help="also measure searches per second from THREADS connections, and the TCP "
                         "connections r1 accepted per 1,000 calls (upstream keepalive at work)")
    ap.add_argument("--json")
    ap.add_argument("--append", help="append the tables to this Markdown file (docs/benchmarks-read-pool.md)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hvpo", dir="/tmp"))
    lab = PoolLab(work, pool=False, prefix=os.environ.get("HAVIP_LAB_PREFIX"))
    res: dict = {}
    try:
        lab.up()
        p = lab.hosts["p"].addr
        base = havip_conf(lab, 19560, ["r1"])
        uris = {"direct": lab.uri("r1")}
        ports = {}
        _nginx(lab, "recipe", recipe_conf(lab, 19559, ["r1"]))
        uris["recipe (stream)"] = f"http://{p}:19559"
        ports["recipe (stream)"] = 19559
        for i, name in enumerate(args.variants.split(",")):
            port = 19560 + i
            if name == "3 members":
                text = havip_conf(lab, port, lab.readers)
            elif VARIANTS[name] is None:
                text = MINIMAL.replace("$member", lab.addr("r1")).replace("$port", str(port))
            else:
                text = VARIANTS[name](base).replace("0.0.0.0:19560", f"0.0.0.0:{port}")
            _nginx(lab, f"v{i}", text)
            uris[name] = f"http://{p}:{port}"
            ports[name] = port
        for uri in uris.values():
            _wait_port(lab, uri)
        la0 = os.getloadavg()
        t0 = time.monotonic()
        r = lab.client("compare", wait=3600, uris=uris, n=args.n, rounds=args.rounds)
        res["bridge"] = {k: {**_stats(v), "failed": r["failed"][k]} for k, v in r["latencies"].items()}
        if args.loopback:
            lo = {"direct": lab.uri("r1"), **{k: f"http://127.0.0.1:{port}" for k, port in ports.items()}}
            proc = lab.hosts["p"].run(sys.executable, "-m", "havip.lab.pool_client", "compare",
                                      json.dumps({"uris": lo, "n": args.n, "rounds": args.rounds}), timeout=3600)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            res["loopback"] = {k: {**_stats(v), "failed": r["failed"][k]} for k, v in r["latencies"].items()}
        if args.throughput:
            res["throughput"] = throughput(lab, uris, args.n, args.throughput, args.rounds)
        res["load"] = [la0, os.getloadavg()]
        res["seconds"] = time.monotonic() - t0
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    lines = report(args, res)
    print("\n".join(lines))
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
