"""The phase-free takeover, havip against keepalived, taken apart on the client's wire.

A link cut of the master (VRRPv3, advert 0.1 s, priorities 110 and 91, the same timers
for both tools), trials alternating between the tools in fresh namespaces. An AF_PACKET
capture in the client's namespace (bench/wire.py, kernel timestamps) stamps:

    T0  the old master's last advert
    T1  the new master's first advert            T1 - T0: master-down timer (+ its lateness)
    T2  the new master's first gratuitous ARP    T2 - T1: advert -> VIP added -> GARP
    T3  the client's first SYN to the new MAC    T3 - T2: the client's next connect (1 ms grid)
    T4  the first SYN-ACK from the new master    T4 - T3: the answer

T4 - T0 is the phase-free takeover (old master's last advert -> client's first answer):
it does not depend on where between two adverts the link was cut. For havip the daemon's
own transition line adds timer_late_ms (expiry -> decision) and apply_ms (decision ->
advert, VIP, GARP sent).

Usage (root): python bench/takeover.py [--trials 20] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from failover import PORT, PROBER, VIP, _machine, lab, settle  # noqa: E402
from markers import write_block  # noqa: E402

from havip.lab.netns import Topology  # noqa: E402
from havip.protocol.timing import master_down_interval  # noqa: E402

WIRE = Path(__file__).with_name("wire.py")
MODE = dict(version=3, interval=0.1, password=None)
BACKUP_PRIO = 91
# The client connects every 1 ms (failover.py: 10 ms): its own grid adds up to one period to
# T3 - T2, noise that is neither tool's; at 1 ms it is small against the differences sought.
PROBE_PERIOD = 0.001

def markers(keepalived_rt: int) -> tuple[str, str]:
    """The doc's block for one scheduling of keepalived (each run rewrites its own)."""
    return (f"<!-- takeover-ka-rt{keepalived_rt}:begin (bench/takeover.py) -->", f"<!-- takeover-ka-rt{keepalived_rt}:end -->")

PARTS = [("timer", "T1-T0 master-down timer"), ("garp", "T2-T1 advert -> first GARP"),
         ("client", "T3-T2 client's next SYN"), ("answer", "T4-T3 SYN -> SYN-ACK"),
         ("total", "T4-T0 last advert -> first answer"), ("to_garp", "T2-T0 last advert -> first GARP")]


def decompose(wire: list[list], old: str, new: str) -> dict:
    """The stamps T0..T4 (see the module's doc) from one capture, as differences in seconds."""
    vrrp = [(r[0], r[2], r[3], r[4]) for r in wire if r[1] == "vrrp"]
    t0 = max(t for t, src, prio, _mac in vrrp if src == old and prio > 0)
    first_new = min((t, mac) for t, src, prio, mac in vrrp if src == new and t > t0)
    t1, mac = first_new
    garps = [r[0] for r in wire if r[1] == "arp" and r[3] == mac and r[4] == r[5] == VIP and r[0] > t0]
    t2 = min(garps)
    t3 = min(r[0] for r in wire if r[1] == "syn" and r[2] == mac and r[0] > t2 - 0.5)
    t4 = min(r[0] for r in wire if r[1] == "synack" and r[2] == mac and r[0] > t0)
    burst = [g for g in garps if g - t2 < 0.05]
    return {"t0": t0, "timer": t1 - t0, "garp": t2 - t1, "client": t3 - t2, "answer": t4 - t3, "total": t4 - t0,
            "to_garp": t2 - t0, "garps": len(burst),
            "garp_spacing_ms": round(1000 * (burst[-1] - burst[0]) / max(1, len(burst) - 1), 3)}


def _scheduling(pids: list[int]) -> str:
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_RR: "SCHED_RR", os.SCHED_FIFO: "SCHED_FIFO"}
    out = []
    for pid in pids:
        try:
            pol = os.sched_getscheduler(pid) & ~0x40000000
            out.append(f"{names.get(pol, pol)}/{os.sched_getparam(pid).sched_priority}")
        except OSError:
            out.append("?")
    return ",".join(out)


def trial(tool: str, phase: float, mode: dict) -> dict:
    work = Path(tempfile.mkdtemp(prefix="havip-takeover-"))
    with Topology() as topo:
        h1, h2, client, r1, r2 = lab(topo, tool, mode, work)
        try:
            settle(h1, h2, r1, r2, mode)
            duration = 1.0 + 3 * MODE["interval"] + 2.0
            wire = client.popen([sys.executable, str(WIRE), "eth0", str(duration + 0.5), VIP, str(PORT)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wire.stderr.readline()          # "listening"
            # The client at SCHED_RR 1 (below both routers' 10): on a shared, loaded machine a
            # client at normal priority was seen to send nothing for 56 ms.
            prober = client.popen(["chrt", "-r", "1", sys.executable, str(PROBER), VIP, str(PORT), str(duration),
                                   str(PROBE_PERIOD)],
                                  stdout=subprocess.PIPE, text=True)
            json.loads(prober.stdout.readline())
            time.sleep(1.0 + phase * MODE["interval"])
            sched = _scheduling([p for p in (r2.pids()[-1:] if tool == "keepalived" else r2.pids())])
            h1.link_down()
            prober.communicate(timeout=30)
            records = json.loads(wire.communicate(timeout=30)[0])
            res = decompose(records, h1.addr, h2.addr)
            res.update(tool=tool, sched=sched, wire=[r for r in records if r[0] >= res["t0"] - 0.001
                                                     and r[0] <= res["t0"] + res["total"] + 0.06])
            if tool == "havip":
                t = [e for e in r2.impl.transitions() if e["to"] == "master"]
                if t:
                    res["timer_late_ms"] = t[-1].get("timer_late_ms")
                    res["apply_ms"] = t[-1].get("apply_ms")
            return res
        finally:
            r1.kill()
            r2.kill()


def _stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else xs * 9
    return {"median": statistics.median(xs), "p10": q[0], "p90": q[-1], "min": xs[0], "max": xs[-1]}


def render(results: list[dict], trials: int, commit: str, load: str, keepalived_rt: int) -> list[str]:
    by = {t: [r for r in results if r["tool"] == t] for t in ("havip", "keepalived")}
    ideal = master_down_interval(3, BACKUP_PRIO, MODE["interval"])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sched = (f"keepalived with vrrp_rt_priority {keepalived_rt} (both at SCHED_RR 10)" if keepalived_rt
             else "keepalived as it comes (SCHED_OTHER), havip as the lab configures it (realtime_priority 10)")
    flag = f" --keepalived-rt {keepalived_rt}" if keepalived_rt else ""
    out = [f"### {sched}", "",
           f"Measured {when} on {_machine()}, commit {commit}, load average before the run {load}",
           f"(other helpers shared the machine), by `python bench/takeover.py --trials {trials}{flag}`:",
           f"{len(by['havip'])} havip and {len(by['keepalived'])} keepalived trials, alternating. "
           f"RFC 5798's master-down interval for priority 91 at 0.1 s: {ideal * 1000:.2f} ms.", "",
           "| part (ms) | havip median | havip p10..p90 | havip min..max | keepalived median | "
           "keepalived p10..p90 | keepalived min..max | ratio of medians |",
           "|---|---|---|---|---|---|---|---|"]
    for key, label in PARTS:
        h, k = _stats([r[key] for r in by["havip"]]), _stats([r[key] for r in by["keepalived"]])
        ratio = f"{h['median'] / k['median']:.4f}" if key in ("total", "timer", "to_garp") else ""
        out.append(f"| {label} | {h['median'] * 1000:.2f} | {h['p10'] * 1000:.2f}..{h['p90'] * 1000:.2f} | "
                   f"{h['min'] * 1000:.2f}..{h['max'] * 1000:.2f} | {k['median'] * 1000:.2f} | "
                   f"{k['p10'] * 1000:.2f}..{k['p90'] * 1000:.2f} | {k['min'] * 1000:.2f}..{k['max'] * 1000:.2f} | "
                   f"{ratio} |")
    hg = statistics.median(r["garps"] for r in by["havip"])
    kg = statistics.median(r["garps"] for r in by["keepalived"])
    late = [r["timer_late_ms"] for r in by["havip"] if r.get("timer_late_ms") is not None]
    apply = [r["apply_ms"] for r in by["havip"] if r.get("apply_ms") is not None]
    out += ["", f"Gratuitous ARPs in the first 50 ms: havip {hg:g}, keepalived {kg:g}. "
            f"Scheduling of the backup: havip {by['havip'][0]['sched']}, keepalived's VRRP child "
            f"{by['keepalived'][0]['sched']}."]
    if late and apply:
        out.append(f"havip's own log: timer expiry -> decision median {statistics.median(late):.2f} ms "
                   f"(max {max(late):.2f}), decision -> advert, VIP and GARP sent median "
                   f"{statistics.median(apply):.2f} ms (max {max(apply):.2f}).")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="trials per tool")
    ap.add_argument("--out", default=None, help="rewrite the figures block in this Markdown file")
    ap.add_argument("--json", default=None, help="also write every trial here")
    ap.add_argument("--tools", default="havip,keepalived", help="comma-separated (havip,keepalived)")
    ap.add_argument("--keepalived-rt", type=int, default=0,
                    help="keepalived's vrrp_rt_priority (0: its default, SCHED_OTHER; havip's lab config runs "
                         "its loop at realtime_priority 10 for sub-second adverts)")
    args = ap.parse_args()
    commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results = []
    for i in range(args.trials):
        phase = (i * 0.618) % 1.0
        for tool in (("havip", "keepalived") if i % 2 == 0 else ("keepalived", "havip")):
            if tool not in args.tools.split(","):
                continue
            r = trial(tool, phase, {**MODE, "keepalived_rt": args.keepalived_rt})
            results.append(r)
            print(f"{i:3} {tool:10} " + " ".join(f"{k} {r[k] * 1000:7.2f}" for k, _ in PARTS)
                  + f" garps {r['garps']} late {r.get('timer_late_ms')} apply {r.get('apply_ms')}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    block = render(results, args.trials, commit, load, args.keepalived_rt)
    print("\n".join(block))
    if args.out:
        write_block(args.out, *markers(args.keepalived_rt), block)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
