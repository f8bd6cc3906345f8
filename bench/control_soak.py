"""`make soak`: the control-socket soak for 60 s, the daemon at `realtime_priority: 10` and at 0,
under attack and baseline; the figures go to docs/security.md.

Usage: python bench/control_soak.py [--seconds 60] [--out docs/security.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.markers import write_block  # noqa: E402
from tests.control_soak import soak  # noqa: E402

BEGIN, END = "<!-- control-soak:begin -->", "<!-- control-soak:end -->"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--out", default=str(ROOT / "docs" / "security.md"))
    args = ap.parse_args()
    runs = {}
    for name, seconds, only, rt in (("attack_rt", args.seconds, None, 10), ("attack", args.seconds, None, 0),
                                    ("base_rt", min(args.seconds, 20), ("monitor",), 10),
                                    ("base", min(args.seconds, 20), ("monitor",), 0)):
        with tempfile.TemporaryDirectory() as d:
            runs[name] = soak(seconds, d, only=only, realtime_priority=rt)
    s = runs["attack_rt"]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()

    def lat(name: str) -> str:
        d = runs[name]["daemon"] or {}
        q = d.get("lateness_ms", {})
        sched = d.get("scheduling") or {}
        load = ", ".join(f"{x:.1f}" for x in runs[name]["load_average"])
        return (f"{q.get('p50')} / {q.get('p99')} / {q.get('max')} ms ({d.get('adverts')} adverts; loop at "
                f"{sched.get('policy')} {sched.get('priority')}; load {load}"
                f"; `status` failed: {runs[name]['burst_failed'] + runs[name]['monitor_failed']})")

    body = [
        f"Measured {datetime.date.today()} on {platform.node()} ({os.cpu_count()} CPUs, busy with other "
        f"helpers' jobs at the same time: see the load averages), commit {commit}, Python "
        f"{platform.python_version()}; {args.seconds:g} s under attack, {min(args.seconds, 20):g} s baseline.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| bursts of 1,000 concurrent `status` | {s['bursts']} ({s['burst_ok']} answered, {s['burst_failed']} failed) |",
        f"| `status` every 0.5 s during the soak | {s['monitor_ok']} answered, {s['monitor_failed']} failed |",
        f"| slow clients (a byte every 3.9 s) closed | {s['slow_closed']}, longest open {s['slow_open_longest_s']} s |",
        f"| garbage requests answered | {s['garbage_sent']} |",
        f"| advert lateness p50 / p99 / max under attack, `realtime_priority: 10` | {lat('attack_rt')} |",
        f"| the same attack, `realtime_priority: 0` | {lat('attack')} |",
        f"| no attack (baseline, one `status` every 0.5 s), `realtime_priority: 10` | {lat('base_rt')} |",
        f"| no attack, `realtime_priority: 0` | {lat('base')} |",
        f"| EMFILE in the loop's own pipe()/open() | {(s['daemon'] or {}).get('loop_fd_errors')} |",
        f"| daemon process CPU (loop, control server, workers) | {(s['daemon'] or {}).get('daemon_cpu_s')} s |",
        f"| control server refusals | {(s['daemon'] or {}).get('control_counters')} |",
        f"| daemon traceback / exit status | {s['daemon_stderr_traceback']} / {s['daemon_exit']} |",
    ]
    print(write_block(args.out, BEGIN, END, body))


if __name__ == "__main__":
    main()
