"""The havip daemon's memory after a Milvus takeover, every check loaded.

One MilvusLab (milvus-lite containers, the lab's Milvus settings: Docker, gRPC
CheckHealth and storage-lease checks every 0.5 s): h1 serves, its container is killed,
h2 takes over and serves, then a few seconds of checks on both. Reported per host: VmRSS
(resident now) and VmHWM (the peak) of the `havip run` process, and whether numpy or
pandas were ever mapped into it (they must not be: pymilvus loads them, the daemon's own
gRPC client does not). Called by bench/failover.py for docs/benchmarks.md; alone:

    python bench/daemon_rss.py          (root)
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])      # kB
    return out


def _heavy_mapped(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({name for ln in maps for name in ("numpy", "pandas") if f"/{name}" in ln})


def measure(settle: float = 5.0) -> dict:
    """Takeover in a fresh lab; returns {host: {rss_mib, hwm_mib, role, heavy}}."""
    from havip.lab.milvuslab import MilvusLab

    workdir = tempfile.mkdtemp(prefix="hvr", dir="/tmp")
    lab = MilvusLab(f"{workdir}/lab", prefix="hvr" + secrets.token_hex(2))
    try:
        lab.up()
        api = lab.api("h1")
        api.kill("milvus")
        api.close()
        lab.wait_serving("h2", 60)
        time.sleep(settle)                 # checks keep running on both hosts
        out = {}
        for name, d in lab.havipds.items():
            st = _status(d.proc.pid)
            out[name] = {"role": d.state(), "rss_mib": round(st["VmRSS"] / 1024, 1),
                         "hwm_mib": round(st["VmHWM"] / 1024, 1), "heavy": _heavy_mapped(d.proc.pid)}
        return out
    finally:
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
