"""A takeover of the real Milvus standalone server, step by step: container SIGKILLed on
one host, the other host's container started on the same data, then the new server's
timeline (bench/takeover_watch.py, in the new host's namespace): each session key in its
embedded etcd, CheckHealth OK, GetLoadState Loaded, a search answered. Without and with
havip's session sweep (havip.runtime.sessions), alternating; the new server's log is
kept and counted for what it waited on.

Usage (root): python bench/milvus_takeover.py [--trials N] [--modes off,on] [--json F] [--keep]
No havip daemon, no VRRP: only Docker, Milvus and the watcher, so the figures are the
server's own (docs/milvus-standalone.md, "A takeover, step by step").
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from havip.lab.docker import Dockerd  # noqa: E402
from havip.lab.netns import Topology  # noqa: E402
from havip.lab.standalone import build_standalone_image, create_standalone_container  # noqa: E402

COLL = "takeover"
SEED = """
import sys, time
from pymilvus import MilvusClient
c = MilvusClient(uri="http://127.0.0.1:19530", timeout=60)
t0 = time.monotonic()
while True:
    try:
        c.create_collection("%s", dimension=8, consistency_level="Strong", timeout=60)
        break
    except Exception:
        if time.monotonic() - t0 > 120: raise
        time.sleep(1)
for s in range(0, 3000, 300):
    c.insert("%s", [{"id": i, "vector": [float(i %% 13) / 13] * 8} for i in range(s, s + 300)], timeout=30)
c.flush("%s", timeout=60)
c.insert("%s", [{"id": i, "vector": [0.1] * 8} for i in range(3000, 3500)], timeout=30)   # unflushed
print("seeded")
""" % (COLL, COLL, COLL, COLL)
# Log lines of the new server that say what it waits on (counted per trial).
WAITS = {"node not match": "node not match", "failed to connect": "failed to connect",
         "compare is false": "CompareAndSwap ... compare is false (an exclusive session still held)",
         "find no available querynode": "find no available querynode",
         "wait for": "wait for"}


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def healthy(host, budget: float) -> float:
    code = ("import sys,time; sys.path.insert(0, %r)\nfrom havip.checks.milvus_grpc import check_health\n"
            "t0=time.monotonic()\nwhile time.monotonic()-t0<%s:\n  ok,_=check_health('127.0.0.1:19530',1.0)\n"
            "  if ok: print(time.monotonic()-t0); break\n  time.sleep(0.1)\nelse: sys.exit(1)\n") % (str(ROOT), budget)
    p = host.run(sys.executable, "-c", code, timeout=budget + 30, check=False)
    if p.returncode:
        raise RuntimeError(f"Milvus on {host.name} not healthy within {budget}s")
    return float(p.stdout.strip())


def trial(hosts, apis, old: str, new: str, sweep: bool, logdir: Path, n: int) -> dict:
    apis[old].kill("milvus")
    apis[old].wait("milvus", timeout=30)
    t0 = time.time()
    apis[new].start("milvus")
    argv = [sys.executable, str(ROOT / "bench" / "takeover_watch.py"), str(t0), "150", COLL] + (["--sweep"] if sweep else [])
    p = hosts[new].run(*argv, timeout=200, check=False)
    events = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    log = apis[new].logs("milvus", since=int(t0) - 1).decode(errors="replace")
    (logdir / f"trial{n}-{new}-{'sweep' if sweep else 'plain'}.log").write_text(log)
    counts = {k: log.count(k) for k in WAITS}
    end = events[-1] if events and events[-1]["event"] == "end" else {}
    regs = {}
    for e in events:
        if e["event"] == "sessions":
            for k in e["keys"] or []:
                regs.setdefault((k["key"], k.get("id")), e["t"])
    return {"trial": n, "sweep": sweep, "old": old, "new": new, "healthy": end.get("healthy"),
            "loaded": end.get("loaded"), "searchable": end.get("searchable"), "waits": counts,
            "registered": {f"{k}#{i}": t for (k, i), t in regs.items()}, "events": events,
            "stderr": p.stderr[-2000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2, help="takeovers per mode")
    ap.add_argument("--modes", default="off,on", help="session sweep off, on, or both (alternating)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a Milvus setting on top of the lab's (dotted milvus.yaml path), e.g. "
                         "queryCoord.UpdateNextTargetInterval=1")
    ap.add_argument("--etcd", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of the embedded etcd (its config file), e.g. election-timeout=100")
    args = ap.parse_args()
    embed = {k: _number(v) for k, _, v in (item.partition("=") for item in args.etcd)}
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = _number(value)
    modes = [m == "on" for m in args.modes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="hvtk", dir="/tmp"))
    (work / "shared").mkdir()
    logdir = work / "logs"
    logdir.mkdir()
    results = []
    with Topology(f"hv{secrets.token_hex(2)}") as topo:
        hosts, apis = {}, {}
        for name, idx in (("h1", 11), ("h2", 21)):
            h = hosts[name] = topo.add_host(name, idx, ipv6=False)
            d = Dockerd(h, work / name)
            topo.on_close(d.stop)
            d.start()
            build_standalone_image(d, overrides=overrides, embed_etcd=embed)
            create_standalone_container(d, "milvus", work / "shared", stop_timeout=5)
            apis[name] = d._api(timeout=90)
        apis["h1"].start("milvus")
        print(f"h1 cold start healthy after {healthy(hosts['h1'], 120):.1f}s", flush=True)
        p = hosts["h1"].run(sys.executable, "-c", SEED, timeout=400, check=False)
        if "seeded" not in p.stdout:
            raise RuntimeError(p.stderr[-2000:])
        c = ("from pymilvus import MilvusClient\nc=MilvusClient(uri='http://127.0.0.1:19530',timeout=60)\n"
             f"print(c.get_load_state('{COLL}'))")
        print("seeded:", hosts["h1"].run(sys.executable, "-c", c, timeout=120, check=False).stdout.strip(), flush=True)
        serving, n = "h1", 0
        for _ in range(args.trials):
            for sweep in modes:
                n += 1
                other = "h2" if serving == "h1" else "h1"
                r = trial(hosts, apis, serving, other, sweep, logdir, n)
                results.append(r)
                print(json.dumps({k: r[k] for k in ("trial", "sweep", "new", "healthy", "loaded", "searchable",
                                                    "waits", "registered")}), flush=True)
                if r["searchable"] is None:
                    print(r["stderr"], flush=True)
                serving = other
        for a in apis.values():
            a.close()
    if args.json:
        Path(args.json).write_text(json.dumps({"load": os.getloadavg(), "overrides": overrides, "embed_etcd": embed,
                                               "results": results},
                                              indent=1))
    print(f"logs in {logdir}" if args.keep else "")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
