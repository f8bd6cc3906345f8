"""`make soak`: the control-socket soak for 60 s; the figures go to docs/security.md.

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
    with tempfile.TemporaryDirectory() as d:
        s = soak(args.seconds, d)
    with tempfile.TemporaryDirectory() as d:
        nice = soak(args.seconds, d, attacker_nice=19)
    with tempfile.TemporaryDirectory() as d:
        base = soak(min(args.seconds, 20), d, only=("monitor",))
    blat = (base["daemon"] or {}).get("lateness_ms", {})
    nlat = (nice["daemon"] or {}).get("lateness_ms", {})
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lat = (s["daemon"] or {}).get("lateness_ms", {})
    body = [
        f"Measured {datetime.date.today()} on {platform.node()} ({os.cpu_count()} CPUs, shared with other "
        f"jobs), commit {commit}, Python {platform.python_version()}; {args.seconds:g} s.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| bursts of 1,000 concurrent `status` | {s['bursts']} ({s['burst_ok']} answered, {s['burst_failed']} failed) |",
        f"| `status` every 0.5 s during the soak | {s['monitor_ok']} answered, {s['monitor_failed']} failed |",
        f"| slow clients (a byte every 3.9 s) closed | {s['slow_closed']}, longest open {s['slow_open_longest_s']} s |",
        f"| garbage requests answered | {s['garbage_sent']} |",
        f"| adverts sent (VRRPv3, 0.1 s) | {(s['daemon'] or {}).get('adverts')} |",
        f"| advert lateness p50 / p99 / max under attack | {lat.get('p50')} / {lat.get('p99')} / {lat.get('max')} ms |",
        f"| the same attack from a process at nice 19 (the daemon at 0; {nice['burst_failed']} `status` failed) | "
        f"{nlat.get('p50')} / {nlat.get('p99')} / {nlat.get('max')} ms |",
        f"| the same, no attack (baseline, {min(args.seconds, 20):g} s, one `status` every 0.5 s) | "
        f"{blat.get('p50')} / {blat.get('p99')} / {blat.get('max')} ms |",
        f"| load average (1, 5, 15 min) at the end | {', '.join(f'{x:.1f}' for x in s['load_average'])} |",
        f"| EMFILE in the loop's own pipe()/open() | {(s['daemon'] or {}).get('loop_fd_errors')} |",
        f"| daemon process CPU (loop, control server, workers) | {(s['daemon'] or {}).get('daemon_cpu_s')} s |",
        f"| control server refusals | {(s['daemon'] or {}).get('control_counters')} |",
        f"| daemon traceback / exit status | {s['daemon_stderr_traceback']} / {s['daemon_exit']} |",
    ]
    print(write_block(args.out, BEGIN, END, body))


if __name__ == "__main__":
    main()
