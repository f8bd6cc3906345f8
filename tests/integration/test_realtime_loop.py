"""realtime_priority on a running daemon (`havip run` in a lab host): the loop thread runs
SCHED_RR at the configured priority, every other thread (control, hook workers started by
the loop after it took SCHED_RR) and the hook scripts they run are at SCHED_OTHER, and
`havipctl status` says so. Linux schedules threads: /proc/PID/task/TID/stat field 41 is
each thread's policy (0 SCHED_OTHER, 2 SCHED_RR), field 40 its real-time priority."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from havip.lab.havipd import Havipd, vrrp_config
from havip.lab.netns import wait_for

VIP = "198.18.0.50"


def threads(pid: int) -> dict[int, tuple[int, int]]:
    """tid -> (policy, rt_priority) of every thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()     # fields from 3 (state) on
        out[int(tid)] = (int(fields[41 - 3]), int(fields[40 - 3]))
    return out


def test_loop_thread_is_sched_rr_and_workers_are_not(topology, tmp_path):
    h1 = topology.add_host("h1", 11)
    hook = tmp_path / "hook.sh"
    seen = tmp_path / "hook-sched"
    hook.write_text(f"#!/bin/sh\nchrt -p $$ >> {seen}\n")
    hook.chmod(0o755)
    cfg = vrrp_config(priority=110, vips=[f"{VIP}/24"], version=3, interval=0.1, realtime_priority=20,
                      notify={"master": str(hook), "backup": str(hook)})
    d = Havipd(h1, cfg, tmp_path)
    try:
        d.start()
        d.wait_state("master", timeout=20)
        # The hook ran on a worker thread the loop started after taking SCHED_RR.
        wait_for(lambda: seen.exists() and "SCHED_" in seen.read_text(), 20, what="the notify hook to run")
        res = subprocess.run([sys.executable, "-m", "havip.ctl", "-s", d.config["control"]["socket"], "status", "--json"],
                             capture_output=True, text=True, timeout=30)
        st = json.loads(res.stdout)
        ts = threads(d.proc.pid)
        loop = ts.pop(d.proc.pid)           # the main thread runs the loop
        assert loop == (2, 20), f"loop thread policy/priority {loop}"
        assert len(ts) >= 3, f"expected control, control worker and hook threads, got {ts}"
        assert all(policy == 0 for policy, _ in ts.values()), f"worker threads not at SCHED_OTHER: {ts}"
        assert "SCHED_OTHER" in seen.read_text() and "SCHED_RR" not in seen.read_text(), seen.read_text()
        assert st["scheduling"] == {"requested": 20, "policy": "SCHED_RR", "priority": 20,
                                    "detail": "loop thread at SCHED_RR 20; other threads at SCHED_OTHER"}
        text = subprocess.run([sys.executable, "-m", "havip.ctl", "-s", d.config["control"]["socket"], "status"],
                              capture_output=True, text=True, timeout=30).stdout
        assert "SCHED_RR 20" in text, text
        assert d.wait_event(lambda e: e.get("event") == "realtime", timeout=5)["priority"] == 20
    finally:
        d.kill()


def test_refused_realtime_is_a_warning_and_the_daemon_serves(topology, tmp_path):
    """What systemd's RestrictRealtime=yes or a unit without LimitRTPRIO= does: no
    CAP_SYS_NICE and RLIMIT_RTPRIO 0. The daemon logs why, runs at SCHED_OTHER, becomes
    master, and `havipctl status` says REFUSED."""
    h1 = topology.add_host("h1", 11)
    cfg = vrrp_config(priority=110, vips=[f"{VIP}/24"], version=3, interval=0.1, realtime_priority=10)
    d = Havipd(h1, cfg, tmp_path)
    try:
        d.start(wrapper=["setpriv", "--bounding-set", "-sys_nice", "prlimit", "--rtprio=0"])
        d.wait_state("master", timeout=20)
        e = d.wait_event(lambda e: e.get("event") == "realtime_refused", timeout=5)
        assert "Operation not permitted" in e["reason"] and "LimitRTPRIO" in e["reason"], e
        assert threads(d.proc.pid)[d.proc.pid][0] == 0
        text = subprocess.run([sys.executable, "-m", "havip.ctl", "-s", d.config["control"]["socket"], "status"],
                              capture_output=True, text=True, timeout=30).stdout
        assert "REFUSED: asked for SCHED_RR 10: refused by the kernel (Operation not permitted)" in text, text
        assert d.running
    finally:
        d.kill()
