"""End to end: two havip hosts, real dockerd, real milvus-lite on shared storage, a
pymilvus client on the VIP, and a Sampler asking both engines every 50 ms whether two
Milvus containers run at once. It runs for the whole module and must never find one.

The tests run in order on one lab. h1 (priority 110) is master before each fault;
preempt brings it back after each (the recipe's failback), except after a Milvus failure
on h1, where h1 holds back and `havipctl failover` brings it back, so every fault hits
the current master, h1. For each fault: the client writes in the background (a batch is
acknowledged after insert and flush; after insert alone in the container-kill test),
h2 takes over, the client reaches Milvus through the VIP, h1 returns, and every
acknowledged row is there.

Windows that havip cannot close, and why these tests still see no overlap:
- Link cut: a master without a link cannot tell the backup; it kills its container at
  once (no grace: no connection can close without a link), and the backup starts its own
  only after a master-down interval of silence, at worst 3 x 1 s + 0.64 s skew - 1 s
  (the last advert may be up to 1 s older than the cut) = 2.64 s later.
- SIGKILL of havip: the container runs on until `havip cleanup` (systemd's
  ExecStopPost=) removes the VIP, stops it (at most one advert interval of grace) and
  resigns with a priority-0 advert, so h2 takes over after its skew time. Were cleanup
  not to run, h2 would wait a master-down interval and the old Milvus would still run:
  that is what ExecStopPost= is for.
See havip.lab.milvuslab.MILVUS_SETTINGS and docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from havip.lab.client import Client
from havip.lab.milvuslab import HAVIP_HOSTS, VIP, MilvusLab, failover_timeline
from havip.lab.sampler import Sampler
from havip.lab.netns import NETNS_DIR, wait_for
from tests.conftest import require_binary, require_root

pytestmark = [pytest.mark.root, pytest.mark.docker]

BATCH, PERIOD = 10, 0.2
TIMINGS: dict[str, dict] = {}
STOPPED_PIDS: list[int] = []


@dataclass
class Env:
    lab: MilvusLab
    sampler: Sampler
    client: Client | None = None


@pytest.fixture(scope="module")
def env():
    """One lab for the module; the Sampler runs from before havip starts to the end."""
    require_root()
    require_binary("dockerd")
    workdir = tempfile.mkdtemp(prefix="hvl", dir="/tmp")     # short: containerd's socket paths
    lab = MilvusLab(f"{workdir}/lab", prefix="hvl" + secrets.token_hex(2))
    e = None
    try:
        lab.build()
        e = Env(lab, Sampler(lab))
        e.sampler.start()
        yield e
    finally:
        if e is not None:
            e.sampler.stop()
            print(f"\nsampler: {e.sampler.summary()}")
            if e.client is not None:
                e.client.close()
        for pid in STOPPED_PIDS:
            if in_namespace(pid, lab.hosts["h1"].ns):      # not a pid reused by someone else
                os.kill(pid, signal.SIGCONT)
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)
        for name, t in TIMINGS.items():
            print(f"{name:>14}: " + ", ".join(f"{k} {v}" for k, v in t.items()))


def in_namespace(pid: int, ns: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(NETNS_DIR / ns).st_ino
    except OSError:
        return False


def no_overlap(env: Env) -> None:
    assert env.sampler.overlaps == [], f"two Milvus ran at once: {env.sampler.overlaps[:5]}"
    assert env.sampler.samples > 0


def transitions(lab, name: str, since: int) -> list[dict]:
    return lab.havipds[name].transitions()[since:]


def reasons(lab, name: str, since: int) -> str:
    return "\n".join(f"{t['from']} -> {t['to']}: {t['reason']}" for t in transitions(lab, name, since))


# ---------------------------------------------------------------- start-up


def test_backup_stops_a_stale_container_at_startup(env):
    """The recipe's backup never stopped its Milvus: havip starting as backup must.
    h1 starts first so that it, not h2, wins the election."""
    lab = env.lab
    h2, api = lab.hosts["h2"], lab.api("h2")
    api.start("milvus")
    wait_for(lambda: ":19530" in h2.run("ss", "-Hltn").stdout, 20, what="stale Milvus on h2 to listen")
    lab.start_havip("h1")
    lab.start_havip("h2")
    wait_for(lambda: not api.inspect_container("milvus")["State"]["Running"], 5, what="h2's stale Milvus to stop")
    assert api.inspect_container("milvus")["State"]["ExitCode"] == 0      # SIGINT: a clean stop
    api.close()
    assert lab.wait_serving("h1", 30) == "h1"
    assert [(t["to"], t["reason"]) for t in transitions(lab, "h2", 0)] == [
        ("backup", "started; waiting 3.64s for a master's advert")]
    no_overlap(env)

    client = env.client = lab.client()
    client.create()
    for _ in range(5):
        client.insert(100)
    assert client.count() == 500 and client.missing() == []
    assert len(client.search()) == 3


# ---------------------------------------------------------------- faults on the master


def fault_cycle(env: Env, name: str, inject, *, repair=None, old_reason: str, new_reason: str,
                flush: bool = True, timeout: float = 30, failback: str = "preempting") -> dict:
    """h1 serving -> inject(lab) -> h2 serves -> repair(lab) -> h1 serves again (preempt,
    or, after a Milvus failure on h1, `havipctl failover`). The client writes throughout
    and loses nothing; returns the failover's timings."""
    lab, client = env.lab, env.client
    assert lab.wait_serving(None, 30) == "h1", f"h1 should be master before {name}: {lab.describe()}"
    n1, n2 = len(lab.havipds["h1"].transitions()), len(lab.havipds["h2"].transitions())
    client.traffic_start(batch=BATCH, period=PERIOD, flush=flush)
    try:
        time.sleep(0.5)                     # acknowledged writes right up to the fault
        t0 = time.time()
        inject(lab)
        lab.wait_serving("h2", timeout)
        reached = client.wait_reachable(30)
        no_overlap(env)
        changes = env.sampler.changes_since(t0)
        h1_stopped = next(t for t, running in changes["h1"] if not running)
        h2_started = next(t for t, running in changes["h2"] if running)
        assert h2_started > h1_stopped
        assert new_reason in reasons(lab, "h2", n2), reasons(lab, "h2", n2)
        if repair:
            repair(lab)
        lab.wait_serving("h1", timeout)
        assert old_reason in reasons(lab, "h1", n1), reasons(lab, "h1", n1)
        assert failback in reasons(lab, "h1", n1), reasons(lab, "h1", n1)
        client.wait_reachable(30)
    finally:
        report = client.traffic_stop()
    t = failover_timeline(lab.events(), t0, "h2", client.recovered_at(report, t0) or reached)
    t["h1_milvus_stopped"] = round(h1_stopped - t0, 3)     # as the Sampler saw it
    t["h2_milvus_running"] = round(h2_started - t0, 3)
    TIMINGS[name] = t
    print(f"\n{name}: {t}; {report['ops']} background batches, {report['failures']} failed")
    assert report["ops"] - report["failures"] > 10, report
    assert client.missing() == [], "acknowledged rows lost"
    assert client.count() >= len(client.acked)
    no_overlap(env)
    return t


def test_container_killed(env):
    """docker kill (SIGKILL). Here the client acknowledges rows after insert alone, no
    flush: they survive too, as milvus-lite writes its WAL through to the page cache on
    every insert. (The other faults acknowledge after insert + flush.)"""
    unflushed = env.client.insert(50, flush=False)

    def inject(lab):
        api = lab.api("h1")
        api.kill("milvus")
        api.close()
    def take_back(lab):
        # h1's Milvus failed: it stays backup (no bouncing back to a host whose Milvus
        # just died), for longer than its master-down interval, until the operator says.
        wait_for(lambda: lab.havipds["h1"].state() == "backup", 10, what="h1 back to backup")
        time.sleep(4.5)
        assert lab.wait_serving(None, 5) == "h2"
        assert "not preempting back: milvus failed here" in reasons(lab, "h1", 0)
        res = _ctl(lab, "h1", "failover")
        assert res.returncode == 0, res.stdout + res.stderr

    t = fault_cycle(env, "container kill", inject, flush=False, repair=take_back,
                    failback="planned takeover requested by the operator",
                    # final: the die event's round saw "exited", one failure, no `fall` (issue 11)
                    old_reason="master -> fault: milvus checks failed: container check failed 1 time: "
                               "container milvus is not running (exited, exit code 137); giving up mastership",
                    new_reason="backup -> master: master 198.18.0.11 resigned (priority 0); "
                               "taking over after the skew time; taking the storage lease")
    # One round, not `fall` (an exited container is final), and that round at Docker's die
    # event: within check_interval even if the event stream were lost, plus jitter.
    assert t["detection"] < 0.5 + 0.3, t
    assert set(unflushed) <= set(env.client.ids())
    # Both daemons have now run every check and a takeover: neither mapped pandas' or
    # numpy's libraries (pymilvus' package __init__ loads them; the daemon must not).
    for name, d in env.lab.havipds.items():
        maps = Path(f"/proc/{d.proc.pid}/maps").read_text()
        assert not [ln for ln in maps.splitlines() if "/numpy" in ln or "/pandas" in ln], f"havip on {name}"


def test_milvus_hung(env):
    """SIGSTOP on the server: the container still runs, only gRPC CheckHealth fails."""
    def inject(lab):
        pid = lab.container_info("h1")["State"]["Pid"]
        STOPPED_PIDS.append(pid)
        os.kill(pid, signal.SIGSTOP)
    def take_back(lab):
        wait_for(lambda: lab.havipds["h1"].state() == "backup", 10, what="h1 back to backup")
        time.sleep(3)                       # acknowledged writes on h2 before the move back
        res = _ctl(lab, "h1", "failover")
        assert res.returncode == 0, res.stdout + res.stderr

    t = fault_cycle(env, "milvus hung", inject, repair=take_back,
                    failback="planned takeover requested by the operator",
                    old_reason="master -> fault: milvus checks failed: grpc check failed 2 times: "
                               "Milvus did not answer CheckHealth within 0.5s; giving up mastership",
                    new_reason="master 198.18.0.11 resigned (priority 0)")
    assert t["detection"] < 0.5 * 2 + 0.5 + 0.3, t    # plus one check timeout
    # A stopped process cannot act on docker stop's SIGINT: it was killed.
    assert env.lab.container_info("h1")["State"]["Pid"] != STOPPED_PIDS[-1]


@pytest.mark.fuller  # on the real server: tests/e2e/test_standalone_matrix.py
def test_link_cut(env):
    """Cable pulled: h1 sees no carrier and stops Milvus at once; h2 hears silence and
    starts its own only after the master-down interval (the window in the docstring)."""
    t = fault_cycle(env, "link cut", lambda lab: lab.hosts["h1"].link_down(),
                    repair=lambda lab: lab.hosts["h1"].link_up(),
                    old_reason="master -> fault: interface eth0 went down: eth0 has no carrier",
                    new_reason="backup -> master: master 198.18.0.11 silent for 3.6")
    assert "fault -> backup: interface eth0 is up again" in reasons(env.lab, "h1", 0)
    assert t["h1_milvus_stopped"] < 2.0, t            # well within the 2.64 s window


@pytest.mark.fuller  # on the real server: tests/e2e/test_standalone_matrix.py
def test_havip_stopped(env):
    """SIGTERM: h1 stops Milvus, resigns with priority 0 and exits 0; restarted, it
    comes back as backup and preempts."""
    rc: list[int] = []

    def inject(lab):
        rc.append(lab.havipds["h1"].stop(timeout=30))
        assert lab.container_running("h1") is False
        assert not lab.hosts["h1"].has_address(VIP)

    fault_cycle(env, "havip SIGTERM", inject, repair=lambda lab: lab.start_havip("h1"),
                old_reason="master -> stopped: shutting down",
                new_reason="backup -> master: master 198.18.0.11 resigned (priority 0)")
    assert rc == [0]


@pytest.mark.fuller  # on the real server: tests/e2e/test_standalone_matrix.py
def test_havip_killed_then_cleanup_and_restart(env):
    """SIGKILL leaves the VIP and Milvus behind; `havip cleanup` (systemd's
    ExecStopPost=) removes both before h2 can take over, then havip runs again."""
    def inject(lab):
        lab.havipds["h1"].kill()
        res = lab.havipds["h1"].cleanup()
        assert res.returncode == 0, res.stderr
        assert f"VIPs removed: {VIP}/24" in res.stdout and "container milvus: stopped" in res.stdout
        assert "resigned: priority-0 advert sent" in res.stdout
        assert "storage lease " in res.stdout and " released (epoch " in res.stdout
        assert not lab.hosts["h1"].has_address(VIP)
        assert lab.container_running("h1") is False

    fault_cycle(env, "havip SIGKILL", inject, repair=lambda lab: lab.start_havip("h1"),
                old_reason="init -> backup: started; waiting 3.57s for a master's advert",
                new_reason="backup -> master: master 198.18.0.11 resigned (priority 0)")


def test_havip_killed_without_cleanup_the_lease_holds_the_peer_back(env):
    """SIGKILL and *no* `havip cleanup` for a while (no systemd, or a slow one): h1's
    Milvus runs on, orphaned. VRRP alone would have h2 start a second Milvus after its
    master-down interval. The lease's record still says h1 holds it, so h2 becomes master
    with its VIP and Milvus off, until cleanup on h1 stops the orphan and releases it."""
    lab, client = env.lab, env.client
    assert lab.wait_serving(None, 30) == "h1"
    n2 = len(lab.havipds["h2"].events())
    lab.havipds["h1"].kill()
    try:
        lab.havipds["h2"].wait_state("master", 10, after=len(lab.havipds["h2"].transitions()))
        wait_for(lambda: "its havip is gone without releasing it" in _decisions(lab, "h2", n2), 5,
                 what="h2 to find the lease orphaned")
        time.sleep(2)
        assert lab.container_running("h1") is True and lab.container_running("h2") is False
        assert not lab.hosts["h2"].has_address(VIP)
        no_overlap(env)
    finally:
        res = lab.havipds["h1"].cleanup()
    assert res.returncode == 0, res.stderr
    assert " released (epoch " in res.stdout, res.stdout
    assert lab.wait_serving("h2", 30) == "h2"
    client.wait_reachable(30)
    lab.start_havip("h1")
    assert lab.wait_serving("h1", 60) == "h1"
    client.wait_reachable(30)
    assert client.missing() == [], "acknowledged rows lost"
    no_overlap(env)


def _ctl(lab, host: str, *args: str) -> subprocess.CompletedProcess:
    sock = lab.havipds[host].config["control"]["socket"]
    return subprocess.run([sys.executable, "-m", "havip.ctl", "-s", sock, *args], capture_output=True, text=True,
                          timeout=150)


def test_planned_switchover_both_ways_with_havipctl(env):
    """`havipctl failover` on the master hands over (its Milvus stopped before h2's starts),
    and on the backup takes back; the client carries on and loses nothing."""
    lab, client = env.lab, env.client
    assert lab.wait_serving(None, 30) == "h1"
    wait_for(lambda: _ctl(lab, "h1", "status", "--json").returncode == 0, 10, what="h1's control socket")
    st = json.loads(_ctl(lab, "h1", "status", "--json").stdout)
    assert st["container"] == "running" and st["standby_peers"] == [lab.hosts["h2"].addr]
    client.traffic_start(batch=BATCH, period=PERIOD, flush=True)
    try:
        t0 = time.time()
        res = _ctl(lab, "h1", "failover")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "switchover done" in res.stdout
        assert lab.wait_serving("h2", 30) == "h2"
        client.wait_reachable(30)
        changes = env.sampler.changes_since(t0)
        assert next(t for t, r in changes["h2"] if r) > next(t for t, r in changes["h1"] if not r)
        time.sleep(5)                   # h1 holds: no preempting straight back
        assert lab.wait_serving(None, 5) == "h2"
        res = _ctl(lab, "h1", "failover")
        assert res.returncode == 0, res.stdout + res.stderr
        assert lab.wait_serving("h1", 30) == "h1"
        client.wait_reachable(30)
    finally:
        report = client.traffic_stop()
    assert report["ops"] - report["failures"] > 10, report
    assert client.missing() == [], "acknowledged rows lost"
    no_overlap(env)


def _decisions(lab, host: str, since: int) -> str:
    return "\n".join(e.get("reason", "") for e in lab.havipds[host].events()[since:]
                     if e.get("event") in ("transition", "decision"))


def test_split_brain_keeps_one_writer_through_the_storage_lease(env):
    """h1 and h2 stop hearing each other but both keep their carrier, the client and the
    shared storage (bridge port isolation): VRRP alone elects two masters, and would start
    two Milvus on one storage. h2 becomes master but finds the storage lease held by h1:
    no VIP, no Milvus on h2. Then h1's Milvus dies while they are still apart: h1 stops
    it and gives the lease back, and h2, which never heard h1's priority 0, takes the lease
    and serves. The partition heals: h1, whose Milvus failed, holds back until `havipctl
    failover` moves Milvus back."""
    lab, client = env.lab, env.client
    assert lab.wait_serving(None, 30) == "h1"
    h1, h2 = lab.hosts["h1"], lab.hosts["h2"]
    n1, n2 = len(lab.havipds["h1"].events()), len(lab.havipds["h2"].events())
    client.traffic_start(batch=BATCH, period=PERIOD, flush=True)
    try:
        h1.isolate()
        h2.isolate()
        lab.havipds["h2"].wait_state("master", 10, after=len(lab.havipds["h2"].transitions()))
        wait_for(lambda: "milvus waits: the storage lease" in _decisions(lab, "h2", n2), 5,
                 what="h2 to find the lease held")
        assert "is held by lab-h1" in _decisions(lab, "h2", n2)
        wait_for(lambda: _ctl(lab, "h2", "status", "--json").returncode == 0, 5, what="h2's control socket")
        st = json.loads(_ctl(lab, "h2", "status", "--json").stdout)
        assert (st["state"], st["container"], st["vip_attached"]) == ("master", "leasing", False), st
        assert st["lease"]["holder"] == "lab-h1" and st["lease"]["held_here"] is False, st
        time.sleep(3)                          # two VRRP masters, one Milvus, one VIP
        assert lab.vip_holders() == ["h1"] and lab.container_running("h2") is False
        assert lab.havipds["h1"].state() == "master" and lab.havipds["h2"].state() == "master"
        client.wait_reachable(10)

        t0 = time.time()
        api = lab.api("h1")
        api.kill("milvus")
        api.close()
        assert lab.wait_serving("h2", 30) == "h2"
        # Heal at once: h1, back to backup since its Milvus failed, hears nobody while apart
        # and would become VRRP master (in name: no lease) after its master-down interval;
        # healed after that, its priority wins over h2's (seen under load).
        h1.isolate(False)
        h2.isolate(False)
        client.wait_reachable(30)
        assert "storage lease" in _decisions(lab, "h2", n2) and "acquired" in _decisions(lab, "h2", n2)
        changes = env.sampler.changes_since(t0)
        assert next(t for t, r in changes["h2"] if r) > next(t for t, r in changes["h1"] if not r)
        # Healed: h1, whose Milvus failed, holds back (no bouncing); h2 serves on.
        wait_for(lambda: "not preempting back" in _decisions(lab, "h1", n1), 10, what="h1 to hold back")
        time.sleep(4)
        assert lab.wait_serving(None, 5) == "h2"
        res = _ctl(lab, "h1", "failover")
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        h1.isolate(False)
        h2.isolate(False)
        report = client.traffic_stop()
    assert lab.wait_serving("h1", 60) == "h1", lab.describe()
    client.wait_reachable(30)
    assert report["ops"] - report["failures"] > 10, report
    assert client.missing() == [], "acknowledged rows lost"
    no_overlap(env)


def test_havip_frozen_on_the_master_never_two_writers(env):
    """havip on h1 frozen (SIGSTOP) for 20 s while its Milvus serves: h1 stops advertising,
    h2 becomes VRRP master but finds the storage lease held by the frozen process (its flock
    lives on): no VIP and no Milvus on h2. SIGCONT: h1 advertises again, h2 steps down, h1
    serves on; its log says how long its loop stood still."""
    lab, client = env.lab, env.client
    assert lab.wait_serving(None, 30) == "h1"
    pid = lab.havipds["h1"].proc.pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"havip.cli" in f.read(), "the Popen pid is not havip itself"
    n1, n2 = len(lab.havipds["h1"].events()), len(lab.havipds["h2"].events())
    client.traffic_start(batch=BATCH, period=PERIOD, flush=True)
    holders: set[tuple[str, ...]] = set()
    try:
        os.kill(pid, signal.SIGSTOP)
        STOPPED_PIDS.append(pid)
        end = time.time() + 20
        while time.time() < end:
            holders.add(tuple(lab.vip_holders()))
            time.sleep(0.2)
        assert lab.havipds["h2"].state() == "master", lab.describe()
        assert "milvus waits: the storage lease" in _decisions(lab, "h2", n2)
        assert lab.container_running("h2") is False
    finally:
        os.kill(pid, signal.SIGCONT)
        STOPPED_PIDS.remove(pid)
    try:
        lab.havipds["h2"].wait_state("backup", 15, after=len(lab.havipds["h2"].transitions()) - 1)
        assert lab.wait_serving(None, 30) == "h1"
        client.wait_reachable(30)
    finally:
        report = client.traffic_stop()
    assert holders <= {("h1",)}, f"VIP holders seen while h1 was frozen: {holders}"
    wait_for(lambda: any(e.get("event") == "loop_stalled" for e in lab.havipds["h1"].events()[n1:]), 10,
             what="h1 to say its loop stood still")
    assert report["ops"] - report["failures"] > 10, report
    assert client.missing() == [], "acknowledged rows lost"
    no_overlap(env)


def test_final_state(env):
    lab = env.lab
    assert lab.wait_serving(None, 10) == "h1"
    st = lab.state()
    assert (st["master"], st["vip_holders"]) == ("h1", ["h1"])
    assert {n: h["container"] for n, h in st["hosts"].items()} == {"h1": "running", "h2": "exited"}
    assert set(st["hosts"]) == set(HAVIP_HOSTS)
    no_overlap(env)
    assert env.sampler.max_interval < 0.5, env.sampler.summary()
