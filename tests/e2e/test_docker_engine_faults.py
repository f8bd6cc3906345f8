"""End to end: the Docker engine on the master frozen (SIGSTOP dockerd) or killed
(SIGKILL), with real dockerd, real milvus-lite on shared storage and two havip hosts
(issue 10's fault matrix).

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
import signal
import time

import pytest

from havip.lab.netns import wait_for
from tests.e2e.labtools import Watch, alive, own_lab

pytestmark = [pytest.mark.root, pytest.mark.docker]


@pytest.fixture
def lab():
    with own_lab("hvd", up=True) as lab:
        yield lab


def test_docker_engine_frozen_on_the_master_gives_an_outage_never_two_writers(lab):
    assert lab.wait_serving(None, 60) == "h1"
    milvus_pid = lab.container_info("h1")["State"]["Pid"]
    dockerd_pid = lab.dockerds["h1"].proc.pid
    with open(f"/proc/{dockerd_pid}/cmdline", "rb") as f:
        assert b"dockerd" in f.read()
    n1 = len(lab.havipds["h1"].events())
    watch = Watch(lab, milvus_pid)
    overlaps, vip_states = watch.overlaps, watch.vip_states

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


def test_docker_engine_killed_on_the_master_gives_an_outage_never_two_writers(lab):
    """SIGKILL of h1's dockerd. The container's shim (containerd-shim-runc-v2, a process of
    its own) outlives the engine, so Milvus runs on with no engine to ask about it or to
    stop it (seen: still running 10 s after the kill). h1's container check fails (the engine socket
    refuses), h1 removes the VIP and asks to kill Milvus, which cannot be done: the lease is
    kept and h1 does not resign, so h2 stays backup (an outage, never two writers). When
    the engine is back (systemd restarts docker.service; here the test starts it again on
    the same data-root), it finds the orphaned container and stops it (no live-restore),
    h1's retried stop is confirmed, the lease goes back, and h2 serves."""
    assert lab.wait_serving(None, 60) == "h1"
    milvus_pid = lab.container_info("h1")["State"]["Pid"]
    dockerd = lab.dockerds["h1"]
    with open(f"/proc/{dockerd.proc.pid}/cmdline", "rb") as f:
        assert b"dockerd" in f.read()
    n1 = len(lab.havipds["h1"].events())
    watch = Watch(lab, milvus_pid)
    overlaps, vip_states = watch.overlaps, watch.vip_states

    killed_at = time.time()
    os.kill(dockerd.proc.pid, signal.SIGKILL)
    dockerd.proc.wait(10)
    watch(10.0)
    milvus_survived = alive(milvus_pid)
    print(f"dockerd killed: milvus-lite (pid {milvus_pid}) {'still runs' if milvus_survived else 'is gone'} "
          f"10 s later; h1 {lab.havipds['h1'].state()}, h2 {lab.havipds['h2'].state()}, VIP on {lab.vip_holders()}")
    said = "\n".join(str(e.get("reason", "")) for e in lab.havipds["h1"].events()[n1:])
    assert "Docker engine" in said, said
    if milvus_survived:
        assert lab.havipds["h2"].state() == "backup", "h2 took over while h1's Milvus may run"
        assert lab.vip_holders() == [], "the VIP should be off while h1's Milvus cannot be stopped"
    restarted_at = time.time()
    dockerd.start()
    lab.save()
    serving = lab.wait_serving(None, 90)
    watch(2.0)
    print(f"engine back {restarted_at - killed_at:.1f} s after the kill; {serving} serves "
          f"{time.time() - killed_at:.1f} s after it; h1 said:")
    for e in lab.havipds["h1"].events()[n1:]:
        if e.get("reason") and e.get("event") != "advert":
            print(f"  {e.get('timestamp')} {e.get('event')}: {e['reason']}")
    assert not alive(milvus_pid)
    assert overlaps == [], f"two Milvus at {overlaps[:3]}"
    assert {("h1", "h2"), ("h2", "h1")}.isdisjoint(vip_states), vip_states
