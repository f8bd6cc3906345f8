"""End to end: the Docker engine on the master frozen (SIGSTOP dockerd), with real dockerd,
real milvus-lite on shared storage and two havip hosts (issue 10's fault matrix).

A frozen engine answers nothing, but the Milvus container it started runs on (its shim is
a separate process). h1's container check fails, h1 removes the VIP and asks the engine
to kill Milvus; the kill hangs, so h1 keeps advertising and never resigns: h2 must not start
a second Milvus. The price is an outage (no VIP anywhere) until the engine answers again;
then the kill completes, h1 gives the lease back and resigns, and h2 serves.

The e2e module test_milvus_failover.py samples both engines every 50 ms; a frozen engine
would blind that sampler, so this fault runs on its own lab and watches h1's Milvus by
its process id instead (/proc), which needs no engine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time

import pytest

from havip.lab.milvuslab import MilvusLab
from havip.lab.netns import wait_for
from tests.conftest import require_binary, require_root

pytestmark = [pytest.mark.root, pytest.mark.docker]


@pytest.fixture
def lab():
    require_root()
    require_binary("dockerd")
    workdir = tempfile.mkdtemp(prefix="hvd", dir="/tmp")     # short: containerd's socket paths
    lab = MilvusLab(f"{workdir}/lab", prefix="hvd" + secrets.token_hex(2))
    frozen: list[int] = []
    lab.frozen = frozen
    try:
        lab.up()
        yield lab
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_docker_engine_frozen_on_the_master_gives_an_outage_never_two_writers(lab):
    assert lab.wait_serving(None, 60) == "h1"
    milvus_pid = lab.container_info("h1")["State"]["Pid"]
    dockerd_pid = lab.dockerds["h1"].proc.pid
    with open(f"/proc/{dockerd_pid}/cmdline", "rb") as f:
        assert b"dockerd" in f.read()
    n1 = len(lab.havipds["h1"].events())
    overlaps, vip_states = [], set()

    def watch(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            h2_runs = lab.container_running("h2")
            if h2_runs and alive(milvus_pid):
                overlaps.append(time.time())
            vip_states.add(tuple(lab.vip_holders()))
            time.sleep(0.1)

    os.kill(dockerd_pid, signal.SIGSTOP)
    lab.frozen.append(dockerd_pid)
    try:
        watch(15.0)
        assert alive(milvus_pid), "the container should outlive its frozen engine"
        assert lab.havipds["h1"].state() in ("master", "fault")
        assert lab.havipds["h2"].state() == "backup", "h2 took over while h1's Milvus may run"
        assert lab.vip_holders() == [], "the VIP should be off while h1's Milvus cannot be stopped"
    finally:
        os.kill(dockerd_pid, signal.SIGCONT)
        lab.frozen.remove(dockerd_pid)
    assert lab.wait_serving("h2", 60) == "h2"
    assert not alive(milvus_pid)
    watch(2.0)
    assert overlaps == [], f"two Milvus at {overlaps[:3]}"
    assert {("h1", "h2"), ("h2", "h1")}.isdisjoint(vip_states), vip_states
    said = "\n".join(str(e.get("reason", "")) for e in lab.havipds["h1"].events()[n1:])
    assert "milvus could not be stopped" in said or "stopped without grace" in said, said
    wait_for(lambda: lab.havipds["h1"].state() in ("backup", "fault"), 30, what="h1 to step down")
