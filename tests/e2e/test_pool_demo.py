"""`havip lab demo --pool` (named in the README and docs/read-pool.md): the read-pool lab
shows searches spread, a node killed with no failed search, its removal and return, and
an insert landing on the writer; then everything is torn down."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile

import pytest

from havip.lab.havipd import havip_argv
from havip.lab.netns import NETNS_DIR, ns_pids
from tests.conftest import require_binary, require_root

pytestmark = [pytest.mark.root]


def test_havip_lab_demo_pool_runs_and_cleans_up():
    require_root()
    require_binary("nginx")
    workdir = tempfile.mkdtemp(prefix="hvpd", dir="/tmp")
    prefix = "hvq" + secrets.token_hex(2)
    env = {**os.environ, "HAVIP_LAB_PREFIX": prefix, "HAVIP_LAB_DIR": workdir}
    try:
        res = subprocess.run([*havip_argv(), "lab", "demo", "--pool"], capture_output=True, text=True,
                             timeout=600, env=env)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-3000:]
        spread = re.search(r"Calls answered per node: (.*)\.", out)
        assert spread and all(int(n) > 0 for n in re.findall(r":19530 (\d+)", spread[1])), out[-3000:]
        assert re.search(r"r2 left the pool [\d.]+s after the kill: out of the pool: checks failed", out)
        assert re.search(r"the client: 1000 searches ok, 0 failed", out), out[-3000:]
        assert re.search(r"r2 is back [\d.]+s after it was ready: back in the pool", out)
        ins = re.search(r"w (\d+) -> (\d+), r1 (\d+) -> (\d+), r2 (\d+) -> (\d+), r3 (\d+) -> (\d+)", out)
        assert ins, out[-3000:]
        w0, w1, *readers = map(int, ins.groups())
        assert w1 == w0 + 10 and readers[0::2] == readers[1::2]
        assert "3/3 read nodes healthy" in out and "Read-pool lab removed." in out
    finally:
        left = [n for n in os.listdir(NETNS_DIR) if n.startswith(prefix)] if NETNS_DIR.exists() else []
        for ns in left:          # the demo failed to tear down: our own namespaces, by name
            for pid in ns_pids(ns):
                os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    assert not left, f"the demo left namespaces behind: {left}"
