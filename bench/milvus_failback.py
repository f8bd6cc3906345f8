"""What an automatic failback costs on the real Milvus server (issue 11, item 4).

One MilvusLab with Milvus 2.3.5 standalone (the lab's settings: session TTL 5 s), a client
writing through the VIP (10 rows inserted every 0.2 s, acknowledged when the insert
returns, searched after each batch; no flush: on the real server a flush takes seconds,
so flushing every batch would measure the flush, not the handover). h1 (priority 110) serves; its link is cut; h2 takes over; the link comes back and
h1, with havip's default `preempt: true` (keepalived's default too), takes Milvus back:
h2 stops its server, h1 starts its own on the same data. Reported: every window in which
the client's writes failed (start, length), which handover caused it, and whether any
acknowledged row is missing at the end.

Usage (root): python bench/milvus_failback.py [--trials N] [--out FILE.json]
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


def windows(events: list, since: float) -> list[tuple[float, float]]:
    """(start, length) of every failure window after wall time `since`."""
    out, down_at = [], None
    for at, ok, _ in events:
        if at < since:
            continue
        if not ok and down_at is None:
            down_at = at
        elif ok and down_at is not None:
            out.append((round(down_at - since, 2), round(at - down_at, 2)))
            down_at = None
    return out


def trial(lab) -> dict:
    client = lab.client(collection=f"failback_{int(time.time())}")
    try:
        client.create()
        client.insert(100)
        client.traffic_start(batch=10, period=0.2, flush=False)
        time.sleep(2)
        t_cut = time.time()
        lab.hosts["h1"].link_down()
        lab.wait_serving("h2", 180)
        client.wait_reachable(120)
        time.sleep(5)
        t_heal = time.time()
        lab.hosts["h1"].link_up()
        lab.wait_serving("h1", 240)
        client.wait_reachable(120)
        time.sleep(2)
        report = client.traffic_stop()
        missing = client.missing()
    finally:
        client.close()
    lost = set(missing)
    lost_batches = [[start, n, round(at - t_cut, 2)] for start, n, at in report["acked"]
                    if lost & set(range(start, start + n))]
    takeover = windows(report["events"], t_cut)
    failback = windows(report["events"], t_heal)
    return {"takeover_windows": [w for w in takeover if w[0] < t_heal - t_cut],
            "failback_windows": failback, "heal_at": round(t_heal - t_cut, 2),
            "acked": len(client.acked), "missing": len(missing),
            "lost_batches_acked_at": lost_batches,    # [first id, rows, seconds after the cut]
            "batches": report["ops"], "failed_batches": report["failures"],
            "errors": sorted({e[2][:120] for e in report["events"] if not e[1]})}


def main() -> None:
    from havip.lab.milvuslab import MilvusLab

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="hvf", dir="/tmp")
    lab = MilvusLab(f"{workdir}/lab", prefix="hvf" + secrets.token_hex(2), milvus="standalone")
    results = []
    try:
        lab.up(timeout=120)
        for _ in range(args.trials):
            results.append(trial(lab))
            print(json.dumps(results[-1]), flush=True)
    finally:
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
