"""`havip lab demo --pool`: the read pool shown to a client.

Builds a PoolLab (a writer, three read nodes, `havip pool run` with nginx, a client),
then: searches spread over the three nodes; one node killed while a client searches,
with no failed search; the node leaving the pool, coming back after a restart; an
insert through the pool landing on the writer only. Prints havip's own sentences.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from havip.lab.netns import wait_for
from havip.lab.poollab import PoolLab

Echo = Callable[[str], None]


def _requests(lab: PoolLab) -> dict[str, int]:
    return {m["address"]: m["requests"] for m in lab.status()["members"]}


def _settled(lab: PoolLab) -> dict[str, int]:
    time.sleep(1.1)          # the status file is rewritten every second
    return _requests(lab)


def run_pool_demo(workdir: str | None, prefix: str | None, echo: Echo, keep: bool = False) -> None:
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="hvpool", dir="/var/tmp"))
    lab = PoolLab(work, prefix=prefix)
    echo(f"Building the read-pool lab in {work}: writer w, read nodes r1 r2 r3 (milvus-lite, each on its own "
         "data), pool host p (havip pool + nginx), client; each in its own network namespace.")
    t0 = time.monotonic()
    lab.up()
    try:
        echo(f"Up in {time.monotonic() - t0:.1f}s. Each read node holds the same collection (havip_pool).")
        _show_status(lab, echo)

        before = _requests(lab)
        r = lab.client("searches", uri=lab.pool_uri, n=600, threads=2)
        after = _settled(lab)
        spread = ", ".join(f"{a} {after[a] - before[a]}" for a in after)
        echo(f"\n600 searches through {lab.pool_uri} on 2 connections: {r['ok']} ok, {r['failed']} failed. "
             f"Calls answered per node: {spread}.")

        echo("\nNow r2 is killed (SIGKILL) while the client runs 1,000 more searches.")
        go = work / "go"
        out = work / "kill-searches.json"
        proc = lab.client_bg("searches", out, uri=lab.pool_uri, n=1000, threads=2, timeout=5.0, go_file=str(go))
        time.sleep(2)
        go.touch()
        time.sleep(0.3)
        lab.kill("r2")
        took = lab.wait_member("r2", False, 10)
        echo(f"  r2 left the pool {took:.2f}s after the kill: {lab.member('r2')['reason']}")
        proc.wait(120)
        import json

        res = json.loads(out.read_text().strip().splitlines()[-1])
        echo(f"  the client: {res['ok']} searches ok, {res['failed']} failed.")

        echo("\nr2 is started again on its data (and its collection loaded).")
        lab.restart("r2")
        took = lab.wait_member("r2", True, 30)
        echo(f"  r2 is back {took:.2f}s after it was ready: {lab.member('r2')['reason']}")

        counts = {n: lab.client("count", uri=lab.uri(n))["count"] for n in ("w", *lab.readers)}
        lab.client("insert", uri=lab.pool_uri, start=500_000, n=10)
        after_ins = {n: lab.client("count", uri=lab.uri(n))["count"] for n in ("w", *lab.readers)}
        echo("\n10 rows inserted through the pool: rows per node before -> after: "
             + ", ".join(f"{n} {counts[n]} -> {after_ins[n]}" for n in counts)
             + ". Writes go to the writer only.")
        _show_status(lab, echo)
    finally:
        if keep:
            echo(f"\nThe lab stays up (--keep): {work}; it is removed when this process is interrupted.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        lab.close()
        if not workdir:
            shutil.rmtree(work, ignore_errors=True)
        echo("\nRead-pool lab removed.")


def _show_status(lab: PoolLab, echo: Echo) -> None:
    wait_for(lambda: lab.status() is not None, 10, what="pool status")
    proc = subprocess.run([sys.executable, "-m", "havip.ctl", "pool", "status", "--state", str(lab.status_path)],
                          capture_output=True, text=True, timeout=30)
    echo("\n$ havipctl pool status\n" + proc.stdout.rstrip())
