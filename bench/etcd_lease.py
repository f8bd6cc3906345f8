"""The file lease against the etcd lease, side by side in one run, on the same lab.

Two havip hosts (VRRPv3 at 0.2 s, priorities 120 and 110) with a fake Docker engine and
fake Milvus each (havip.lab.fakeengine: exact start and stop times), and for the etcd
lease a real three-member etcd (one member per host plus a witness; ttl 5 s, keep-alive
every 0.5 s, 0.5 s per request, fencing 1.5 s before the earliest expiry). For each fault,
alternate file and etcd trials in fresh namespaces and measure, from the fault, when the
new holder's Milvus starts (takeover) and how long no Milvus ran (gap):

- clean handover: SIGTERM to the holder's havip;
- link cut: the holder's carrier goes (cable pulled);
- holder loses etcd: TCP between the holder and the other two members dropped (VRRP still
  flows). The file lease has no equivalent in the lab (its shared directory is local).

Then the advert timing on the wire, seen from the backup, while the master holds each
lease: the etcd keep-alive runs on its own thread and must not show in the jitter.

Usage (root): python bench/etcd_lease.py [--trials N] [--out docs/benchmarks-etcd.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from havip.lab.etcdsite import build_site  # noqa: E402
from havip.lab.netns import Topology  # noqa: E402
from milvus_failover import _revision  # noqa: E402 - bench/ is on sys.path (this script's folder)

ETCD = {"ttl": 5, "renew_interval": 0.5, "request_timeout": 0.5, "fence_margin": 1.5}
INTERVAL = 0.2
FAULTS = ("clean handover", "link cut", "holder loses etcd")
SNIFF_SECONDS = 15
JITTER_ROUNDS = 2


def _site(topo: Topology, workdir: Path, lease: str, start_etcd: bool | None = None):
    return build_site(topo, workdir, [("h1", 11, 120), ("h2", 21, 110)], lease=lease, etcd=ETCD,
                      vrrp=(3, INTERVAL), start_etcd=start_etcd)


def _cut_etcd(site) -> None:
    h1 = site.nodes["h1"].host
    for other in site.hosts[1:]:
        h1.run("iptables", "-A", "INPUT", "-p", "tcp", "-s", other.addr, "-j", "DROP")
        h1.run("iptables", "-A", "OUTPUT", "-p", "tcp", "-d", other.addr, "-j", "DROP")


def trial(lease: str, fault: str, workdir: Path) -> dict:
    with Topology() as topo:
        site = _site(topo, workdir, lease)
        try:
            site.start_all()
            time.sleep(1.0)                          # steady state: a few keep-alives
            h1 = site.nodes["h1"]
            t0 = time.monotonic()
            if fault == "clean handover":
                h1.daemon.proc.send_signal(15)
            elif fault == "link cut":
                h1.host.link_down()
            else:
                _cut_etcd(site)
            start = site.wait_serving("h2", timeout=30)
            stop = h1.milvus_runs()[-1][1]
            site.never_two_milvus()
            return {"takeover": start - t0, "gap": start - stop if stop else None}
        finally:
            site.kill_all()


def jitter(lease: str, workdir: Path) -> dict:
    with Topology() as topo:
        site = _site(topo, workdir, lease, start_etcd=True)   # etcd runs in both: same load on the machine
        try:
            site.start_all()
            h1, h2 = site.nodes["h1"].host, site.nodes["h2"].host
            out = h2.run(sys.executable, "-m", "havip.lab.sniff", "eth0", str(SNIFF_SECONDS), timeout=60).stdout
            seen = [t for t, src, _ in json.loads(out) if src == h1.addr]
            gaps = [b - a for a, b in zip(seen, seen[1:])]
            dev = sorted(abs(g - INTERVAL) * 1000 for g in gaps)
            return {"adverts": len(seen), "p50": dev[len(dev) // 2], "p99": dev[int(len(dev) * 0.99)],
                    "max": dev[-1]}
        finally:
            site.kill_all()


def _machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.machine()
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return (f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}, Python {platform.python_version()}, "
            f"{etcd[0] if etcd else 'etcd ?'}")


def _fmt(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def report(results: dict, jit: list, trials: int) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark: the file lease against the etcd lease", "",
        f"Run {now} on {_machine()}; {_revision()}.",
        f"`make bench` runs `python bench/etcd_lease.py --out docs/benchmarks-etcd.md` ({trials} trials per cell, "
        "file and etcd alternating, each in fresh namespaces).", "",
        f"Lab: two havip hosts, VRRPv3 at {INTERVAL} s, fake Docker engine and fake Milvus per host (exact start "
        "and stop times), shared directory on this machine for the file lease; for the etcd lease a real "
        f"three-member etcd (members on both hosts and a witness), ttl {ETCD['ttl']} s, keep-alive every "
        f"{ETCD['renew_interval']} s, {ETCD['request_timeout']} s per request, fencing {ETCD['fence_margin']} s "
        "before the earliest expiry. Times are medians from the fault to the new holder's Milvus start "
        "(takeover), and from the old Milvus' stop to the new one's start (gap: no Milvus ran). Never two "
        "Milvus at once in any trial (checked on the whole timeline).", "",
        "| fault | file lease: takeover | file: gap | etcd lease: takeover | etcd: gap |",
        "|---|---|---|---|---|",
    ]
    for fault in FAULTS:
        f, e = results["file"].get(fault, []), results["etcd"].get(fault, [])
        lines.append(f"| {fault} | {_fmt([r['takeover'] for r in f])} | {_fmt([r['gap'] for r in f if r['gap']])} "
                     f"| {_fmt([r['takeover'] for r in e])} | {_fmt([r['gap'] for r in e if r['gap']])} |")
    lines += [
        "", "What the numbers say:", "",
        "- **Clean handover**: the holder stops Milvus, then revokes its etcd lease (the key goes at once) or "
        "unlocks the file, then resigns; the peer takes the key on its first try. The two backends cost the "
        "same, within noise.",
        "- **Link cut**: the holder kills Milvus at once (no carrier), but it cannot reach etcd to revoke its "
        "lease, so the peer, VRRP master after master-down, waits until etcd expires the key: the ttl "
        "after the holder's last keep-alive, plus etcd's own expiry sweep and the revoke through raft (slower "
        "on a loaded machine). The file lease in this lab lives on a local directory the cut "
        "host still reaches, so it is released at once; on NFS a cut host keeps its lock for the server's "
        "lease time (90 s on NFSv4). The ttl is the price of never trusting a host that cannot be reached.",
        "- **Holder loses etcd**: it fences itself ttl - fence_margin after its last answered keep-alive, "
        "resigns, and the peer gets the key when etcd expires it (ttl after that keep-alive). The file lease "
        "has no such bound: a holder that loses its storage cannot know when to stop.",
        "", f"Advert timing seen from the backup over {SNIFF_SECONDS} s while the master holds the lease "
        f"(deviation of the gap between adverts from {INTERVAL} s, in ms; the etcd cluster runs in both, so "
        f"the machine carries the same load; {JITTER_ROUNDS} rounds, alternating):", "",
        "| lease | adverts | p50 | p99 | max |", "|---|---|---|---|---|",
    ]
    for lease, j in jit:
        lines.append(f"| {lease} | {j['adverts']} | {j['p50']:.1f} | {j['p99']:.1f} | {j['max']:.1f} |")
    lines += ["", "The keep-alive runs on its own thread with its own deadlines and the advert loop never waits "
              "on etcd: a difference between the rows that does not repeat across rounds is the machine's noise "
              "(2 shared cores, several labs at once).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--out", default=None, help="write a Markdown report here (docs/benchmarks-etcd.md)")
    args = ap.parse_args()
    results: dict[str, dict[str, list[dict]]] = {"file": {}, "etcd": {}}
    with tempfile.TemporaryDirectory(prefix="hvbench-etcd-") as tmp:
        n = 0
        for fault in FAULTS:
            for i in range(args.trials):
                for lease in (("file", "etcd") if i % 2 == 0 else ("etcd", "file")):
                    if lease == "file" and fault == "holder loses etcd":
                        continue
                    n += 1
                    r = trial(lease, fault, Path(tmp) / f"t{n}")
                    results[lease].setdefault(fault, []).append(r)
                    print(f"{fault:18s} {lease:4s} takeover {r['takeover']:.2f}s gap {r['gap'] or 0:.2f}s",
                          flush=True)
        jit = [(lease, jitter(lease, Path(tmp) / f"j{r}-{lease}")) for r in range(JITTER_ROUNDS)
               for lease in ("file", "etcd")]
        print(json.dumps(jit))
    text = report(results, jit, args.trials)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
