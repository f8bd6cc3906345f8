"""`make loss`: 30 % packet loss on the lab bridge for 60 s, VRRPv2 at 1 s and VRRPv3 at
0.1 s, a real havip pair; transitions counted against what the protocol demands.

Usage: python bench/loss.py [--seconds 60] [--trials 3] [--percent 30] [--out docs/benchmarks-loss.md]
The text around the figures is in docs/benchmarks-loss.md; only the block between the
markers is rewritten.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.markers import write_block  # noqa: E402
from havip.lab.loss import measure  # noqa: E402
from havip.lab.netns import Topology  # noqa: E402

BEGIN, END = "<!-- loss:begin -->", "<!-- loss:end -->"
TIMERS = ((2, 1.0), (3, 0.1))


def one(version: int, interval: float, seconds: float, percent: int) -> dict:
    prefix = os.environ.get("HAVIP_LAB_PREFIX")
    with Topology(prefix) as topo, tempfile.TemporaryDirectory() as d:
        return measure(topo, Path(d), version=version, interval=interval, seconds=seconds, percent=percent)


def row(r: dict) -> str:
    e = r["expected"]
    diff = r["takeovers"] - r["runs_long_enough"]
    if r["master_transitions"]:
        verdict = "NO: the master moved"
    elif diff == 0:
        verdict = "yes"
    elif diff > 0:
        verdict = f"no: {diff} after a run of only {r['lost_in_a_row_to_take_over'] - 1} (late advert or timer)"
    else:
        verdict = f"{-diff} run(s) of {r['lost_in_a_row_to_take_over']} without a takeover (backup's timer late)"
    return (f"| v{r['version']} {r['interval']:g} s | {r['adverts_sent']} | "
            f"{1 - r['adverts_heard'] / r['adverts_sent']:.0%} ({r['frame_loss']:.0%} of all frames) | "
            f"{', '.join(f'{k}: {v}' for k, v in r['runs'].items())} | {r['runs_long_enough']} | "
            f"{e['mean']:.2f} ({e['p_any']:.0%}) | {r['takeovers']} | {r['master_transitions']} | {verdict} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--percent", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks-loss.md"))
    args = ap.parse_args()
    results = []
    for version, interval in TIMERS:
        for _ in range(args.trials):
            r = one(version, interval, args.seconds, args.percent)
            print(json.dumps(r, sort_keys=True), flush=True)
            results.append(r)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    totals = []
    for version, interval in TIMERS:
        rs = [r for r in results if r["version"] == version]
        totals.append(f"- v{version} {interval:g} s, {len(rs)} x {args.seconds:g} s: {sum(r['takeovers'] for r in rs)} "
                      f"takeovers for {sum(r['runs_long_enough'] for r in rs)} runs of >= 3 lost adverts "
                      f"(expected {sum(r['expected']['mean'] for r in rs):.1f}), "
                      f"{sum(r['master_transitions'] for r in rs)} master transitions, "
                      f"{sum(max(0, r['takeovers'] - r['runs_long_enough']) for r in rs)} takeovers not explained "
                      f"by 3 lost adverts.")
    body = [
        f"Measured {datetime.date.today()} on {platform.node()} ({os.cpu_count()} CPUs, shared with other jobs), "
        f"commit {commit}, Python {platform.python_version()}, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end; {args.percent} % loss for "
        f"{args.seconds:g} s per trial, loop threads at SCHED_RR 10 (`realtime_priority: 10`).",
        "",
        "| timers | adverts sent | adverts lost at the backup | runs of lost adverts (length: count) | "
        "runs >= 3 | expected runs >= 3 (P at least one) | backup takeovers | master transitions | "
        "every takeover explained |",
        "|---|---|---|---|---|---|---|---|---|",
        *[row(r) for r in results],
        "",
        *totals,
    ]
    print(write_block(args.out, BEGIN, END, body))


if __name__ == "__main__":
    main()
