"""The README's first command, `havip lab demo` (what `make demo` runs after installing),
on its default Milvus, the real 2.3.5 standalone server (~1.6 min): it builds the lab, kills the master's Milvus under a writing client, shows the failed host
holding back and `havipctl failover` moving Milvus back, and tears everything down."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile

import pytest

from havip.lab.havipd import havip_argv
from havip.lab.netns import NETNS_DIR
from tests.conftest import require_binary, require_root

pytestmark = [pytest.mark.root, pytest.mark.docker]


def test_havip_lab_demo_runs_and_cleans_up():
    require_root()
    require_binary("dockerd")
    workdir = tempfile.mkdtemp(prefix="hvd", dir="/tmp")
    prefix = "hvd" + secrets.token_hex(2)
    env = {**os.environ, "HAVIP_LAB_PREFIX": prefix}
    try:
        res = subprocess.run([*havip_argv(), "lab", "demo", "--workdir", f"{workdir}/lab"],
                             capture_output=True, text=True, timeout=600, env=env)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-3000:]
        for line in (f"namespaces {prefix}-h1, {prefix}-h2 and {prefix}-client",
                     "a stopped Milvus 2.3.5 standalone container on each host",    # the real server by default
                     "Fault: docker kill of the Milvus container on h1",
                     "giving up mastership",
                     "not preempting back: milvus failed here",
                     "havipctl: ", "switchover done",
                     "first client success through the VIP",
                     "no acknowledged row lost",
                     "never two Milvus running",
                     "Tearing the lab down"):
            assert line in out, f"{line!r} not in the demo's output:\n{out[-3000:]}"
        assert "MISSING" not in out and "LOST" not in out
        last = res.stdout.strip().splitlines()[-1]       # where the logs stay, said last
        assert last.startswith(f"Logs stay in {workdir}/lab/havip "), last
        assert {"h1.log", "h2.log", "dockerd-h1.log", "dockerd-h2.log"} <= set(os.listdir(f"{workdir}/lab/havip"))
    finally:
        left = [n for n in os.listdir(NETNS_DIR) if n.startswith(prefix)] if NETNS_DIR.exists() else []
        if left:   # the demo failed to tear down: do it ourselves, by our own ids
            subprocess.run([*havip_argv(), "lab", "down", "--workdir", f"{workdir}/lab"],
                           capture_output=True, text=True, timeout=300, env=env)
        shutil.rmtree(workdir, ignore_errors=True)
    assert not left, f"the demo left namespaces behind: {left}"
