"""Probes and ContainerRuntime against a real dockerd per namespace host and real
milvus-lite containers on shared storage.

Milvus listens inside a host's namespace, which the test process cannot reach, so the
gRPC side runs in a short Python subprocess inside that namespace (`in_ns`), exactly
as havip would run on that host. Docker is reached through its unix socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from havip.checks.probes import DockerProbe
from havip.checks.watch import ContainerWatch
from havip.errors import AdapterError
from havip.lab.docker import Dockerd, build_lab_image, create_milvus_container, lab_binds, LAB_IMAGE
from havip.lab.netns import Host, Topology, wait_for
from havip.runtime.container import ContainerRuntime
from tests.conftest import REPO, require_binary, require_root

pytestmark = [pytest.mark.root, pytest.mark.docker]

PRELUDE = """
import dataclasses, json, os, signal, sys, time
from havip.checks.probes import MilvusProbe, DockerProbe
from havip.checks.milvus_grpc import check_health
from havip.runtime.container import ContainerRuntime
A = json.loads(sys.argv[1])
def out(**kw):
    print(json.dumps({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in kw.items()}))
"""


def in_ns(host: Host, code: str, timeout: float = 90, **args) -> dict:
    """Run PRELUDE + code with `A` = args in the host's namespace; return what out() printed."""
    proc = host.run(sys.executable, "-c", PRELUDE + code, json.dumps(args), check=False, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, f"snippet failed in {host.ns}:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class Lab:
    a: Host
    b: Host
    da: Dockerd
    db: Dockerd


@pytest.fixture(scope="module")
def lab():
    require_root()
    require_binary("dockerd")
    topo = Topology()
    workdirs = []
    try:
        a, b = topo.add_host("a", 11), topo.add_host("b", 21)
        engines = []
        for h in (a, b):
            workdirs.append(Path(tempfile.mkdtemp(prefix="hvd", dir="/tmp")))
            d = Dockerd(h, workdirs[-1])
            topo.on_close(d.stop)        # runs even if a later start fails
            t0 = time.monotonic()
            d.start()
            print(f"\ndockerd in {h.ns} answered after {time.monotonic() - t0:.2f}s")
            build_lab_image(d)
            engines.append(d)
        yield Lab(a, b, *engines)
        for d in engines:            # stopped here, not only by close(), to check it is clean
            t0 = time.monotonic()
            d.stop()
            print(f"\ndockerd in {d.host.ns} stopped after {time.monotonic() - t0:.2f}s")
            assert d.proc.poll() is not None and d._leftover_pids() == []
            assert str(d.workdir) not in Path("/proc/self/mountinfo").read_text()
    finally:
        topo.close()
        for w in workdirs:
            shutil.rmtree(w, ignore_errors=True)


@pytest.fixture
def clean(lab):
    """Every container a test made is removed afterwards, stopped processes resumed first."""
    yield
    for d in (lab.da, lab.db):
        api = d._api()
        for c in api.containers(all=True):
            pid = api.inspect_container(c["Id"])["State"].get("Pid") or 0
            if pid > 0:
                os.kill(pid, signal.SIGCONT)
            api.remove_container(c["Id"], force=True)
        api.close()


@pytest.fixture
def shared(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    return d


# ---------------------------------------------------------------- DockerProbe


def test_docker_probe_container_states(lab, clean, shared):
    create_milvus_container(lab.da, "m-states", shared)
    probe = DockerProbe(lab.da.url, "m-states", timeout=2)
    r = probe.running()
    assert (r.name, r.ok, r.reason) == ("container", False, "container m-states is not running (created)")

    r = DockerProbe(lab.da.url, "no-such", timeout=2).running()
    assert not r.ok and r.reason == f"container no-such does not exist on the Docker engine at {lab.da.url}"

    ContainerRuntime(lab.da.url, "m-states", stop_timeout=10).start()
    r = probe.running()
    assert (r.ok, r.reason) == (True, "container m-states is running (no healthcheck)")


def test_docker_probe_follows_the_image_healthcheck(lab, clean, shared):
    api = lab.da._api()
    flag = shared / "healthy"
    api.create_container(
        LAB_IMAGE, command=["/usr/bin/sleep", "300"], name="hc",
        host_config=api.create_host_config(binds=lab_binds(shared), network_mode="host"),
        healthcheck={"test": ["CMD", "/usr/bin/test", "-f", "/data/healthy"], "interval": 200_000_000,
                     "timeout": 2_000_000_000, "retries": 1, "start_period": 60_000_000_000})
    api.start("hc")
    probe = DockerProbe(lab.da.url, "hc", timeout=2)
    r = probe.running()      # failures during start_period keep it "starting"
    assert (r.ok, r.reason) == (False, "container hc is running but its healthcheck is still starting")
    flag.touch()
    assert wait_for(lambda: probe.running().ok, 10, interval=0.1, what="healthy")
    assert probe.running().reason == "container hc is running and healthy"
    flag.unlink()
    r = wait_for(lambda: (lambda x: x if not x.ok else None)(probe.running()), 10, interval=0.1, what="unhealthy")
    assert r.reason.startswith("container hc is unhealthy")
    api.close()


def test_stop_kills_a_container_that_ignores_its_stop_signal(lab, clean, shared):
    api = lab.da._api()
    # sleep as PID 1 has no SIGTERM handler, so the kernel drops the signal.
    api.create_container(LAB_IMAGE, command=["/usr/bin/sleep", "300"], name="stubborn",
                         host_config=api.create_host_config(binds=lab_binds(shared), network_mode="host"))
    api.close()
    rt = ContainerRuntime(lab.da.url, "stubborn", stop_timeout=1)
    rt.start()
    assert rt.is_running() is True
    t0 = time.monotonic()
    assert rt.stop() is True
    assert 1.0 <= time.monotonic() - t0 < 5
    assert rt.is_running() is False
    r = DockerProbe(lab.da.url, "stubborn", timeout=2).running()
    assert r.reason == "container stubborn is not running (exited, exit code 137)"


def test_the_container_watch_sees_a_kill_and_the_probe_calls_it_final(lab, clean, shared):
    """The engine's die event reaches the watch (issue 11: a killed container is looked
    at now, not at the next round), and the round's inspect then says final."""
    api = lab.da._api()
    api.create_container(LAB_IMAGE, command=["/usr/bin/sleep", "300"], name="watched",
                         host_config=api.create_host_config(binds=lab_binds(shared), network_mode="host"))
    # dockerd's `container=watched` filter also matches watched-etcd (a name prefix, as
    # milvus-etcd is to milvus): the watch tells them apart itself.
    for other in ("other", "watched-etcd"):
        api.create_container(LAB_IMAGE, command=["/usr/bin/sleep", "300"], name=other,
                             host_config=api.create_host_config(binds=lab_binds(shared), network_mode="host"))
    for name in ("watched", "other", "watched-etcd"):
        api.start(name)
    kicks: list[str] = []
    kicked = threading.Event()
    w = ContainerWatch(lab.da.url, "watched", 2.0)
    w.start(lambda why: (kicks.append(why), kicked.set()))
    try:
        wait_for(lambda: w.connected, 10, what="the watch to follow the engine's events")
        api.kill("other")                        # another container's death is not ours
        api.kill("watched-etcd")                 # nor that of one whose name begins with ours
        wait_for(lambda: w.foreign == 1, 10, what="the engine to send watched-etcd's die")
        api.kill("watched")
        assert kicked.wait(10), "no die event reached the watch"
        assert kicks == ["container watched: Docker event die"]
    finally:
        w.stop()
        api.close()
    assert not w._thread.is_alive()
    r = DockerProbe(lab.da.url, "watched", timeout=2).running()
    assert not r.ok and r.final and r.reason == "container watched is not running (exited, exit code 137)"


def test_unreachable_engine_is_a_failed_result_within_the_timeout(tmp_path):
    missing = f"unix://{tmp_path}/nothing/docker.sock"
    t0 = time.monotonic()
    r = DockerProbe(missing, "milvus", timeout=0.5).running()
    assert time.monotonic() - t0 < 0.5
    assert (r.ok, r.reason) == (False, f"Docker engine at {missing} is unreachable: its socket does not exist")
    r = DockerProbe(missing, "milvus", timeout=0.5).can_serve(str(tmp_path))
    assert (r.name, r.ok) == ("standby", False) and "socket does not exist" in r.reason

    # An engine that accepts the connection but never answers (wedged dockerd).
    path = tmp_path / "hung.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(8)
    try:
        t0 = time.monotonic()
        r = DockerProbe(f"unix://{path}", "milvus", timeout=0.5).running()
        took = time.monotonic() - t0
        assert (r.ok, r.reason) == (False, f"Docker engine at unix://{path} did not answer within 0.5s")
        assert 0.5 <= took < 1.2
    finally:
        srv.close()

    rt = ContainerRuntime(missing, "milvus", stop_timeout=1, api_timeout=0.5)
    assert rt.is_running() is None
    with pytest.raises(AdapterError, match=r"^cannot start container milvus: Docker engine at .* socket does not exist"):
        rt.start()
    with pytest.raises(AdapterError, match=r"^cannot stop container milvus: Docker engine at "):
        rt.stop()


# ---------------------------------------------------------------- can_serve


def test_can_serve_checks_the_data_path(lab, clean, shared, tmp_path):
    create_milvus_container(lab.da, "m-serve", shared)
    probe = DockerProbe(lab.da.url, "m-serve", timeout=2)
    r = probe.can_serve(str(shared))
    assert (r.name, r.ok) == ("standby", True)
    assert r.reason == f"container m-serve exists and data path {shared} is a writable directory (not a mount point)"
    assert list(shared.iterdir()) == []           # the probe file is gone

    assert probe.can_serve(None).reason == "container m-serve exists (no data path configured)"
    r = probe.can_serve(str(tmp_path / "missing"))
    assert (r.ok, r.reason) == (False, f"data path {tmp_path / 'missing'} does not exist")
    (tmp_path / "file").write_text("x")
    assert probe.can_serve(str(tmp_path / "file")).reason == f"data path {tmp_path / 'file'} is not a directory"
    r = probe.can_serve(str(shared), require_mount=True)
    assert (r.ok, r.reason) == (False, f"data path {shared} is not a mount point (is the shared storage mounted?)")
    r = DockerProbe(lab.da.url, "no-such", timeout=2).can_serve(str(shared))
    assert not r.ok and "container no-such does not exist" in r.reason


def test_can_serve_refuses_a_read_only_mount(lab, clean, tmp_path):
    """Root ignores permission bits, so read-only means a read-only filesystem: tmpfs
    mounts made in a private mount namespace that vanishes with the subprocess."""
    require_binary("unshare")
    create_milvus_container(lab.da, "m-ro", tmp_path)
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    code = PRELUDE + """
import subprocess
subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "havip-test", A["ro"]], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "rw,size=1m", "havip-test", A["rw"]], check=True)
p = DockerProbe(A["url"], "m-ro", timeout=2)
out(ro=p.can_serve(A["ro"]), rw=p.can_serve(A["rw"], require_mount=True))
"""
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code,
                           json.dumps({"ro": str(ro), "rw": str(rw), "url": lab.da.url})],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (res["ro"]["ok"], res["ro"]["reason"]) == (False, f"data path {ro} is read-only")
    assert res["rw"]["ok"] and res["rw"]["reason"].endswith(f"data path {rw} is a writable mount point")


# ---------------------------------------------------------------- Milvus and the runtime

START_AND_WAIT = """
rt = ContainerRuntime(A["url"], A["name"], stop_timeout=10)
t0 = time.monotonic()
rt.start()
rt.start()                                   # idempotent
r = rt.wait_ready(MilvusProbe(A["addr"], 1.0), A.get("timeout", 30))
out(ready=r, took=time.monotonic() - t0)
"""


def test_milvus_probe_healthy_refused_hung_and_runtime_stop(lab, clean, shared):
    refused = in_ns(lab.b, "out(r=MilvusProbe(A['addr'], 1.0).check())", addr=f"{lab.b.addr}:19530")["r"]
    assert (refused["name"], refused["ok"]) == ("grpc", False)
    assert refused["reason"] == f"Milvus at {lab.b.addr}:19530 refused the connection (nothing listening)"
    once = in_ns(lab.b, "out(r=check_health(A['addr'], 1.0))", addr=f"{lab.b.addr}:19530")["r"]
    assert once == [False, refused["reason"]]

    create_milvus_container(lab.da, "m-a", shared)
    addr = f"{lab.a.addr}:19530"
    res = in_ns(lab.a, START_AND_WAIT, url=lab.da.url, name="m-a", addr=addr)
    print(f"\nstart -> healthy: {res['took']:.2f}s ({res['ready']['reason']})")
    assert res["ready"]["ok"], res["ready"]["reason"]
    assert in_ns(lab.a, "out(r=check_health(A['addr'], 1.0))", addr=addr)["r"] == [True, f"Milvus at {addr} is healthy"]

    pid = lab.da._api().inspect_container("m-a")["State"]["Pid"]
    try:
        hung = in_ns(lab.a, """
p = MilvusProbe(A["addr"], 1.0)
before = p.check()                           # establishes the channel
os.kill(A["pid"], signal.SIGSTOP)
during = p.check()                           # same channel, server frozen, port open
fresh = MilvusProbe(A["addr"], 1.0).check()  # a new connection to the frozen server
rt = ContainerRuntime(A["url"], "m-a", stop_timeout=10)
waited = rt.wait_ready(p, 1.5)
os.kill(A["pid"], signal.SIGCONT)
after = p.check()                            # the channel was recreated
out(before=before, during=during, fresh=fresh, waited=waited, after=after)
""", addr=addr, pid=pid, url=lab.da.url)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert hung["before"]["ok"]
    for r in (hung["during"], hung["fresh"]):
        assert (r["ok"], r["reason"]) == (False, "Milvus did not answer CheckHealth within 1.0s")
        assert 1.0 <= r["latency"] < 1.5
    assert not hung["waited"]["ok"] and hung["waited"]["latency"] < 1.8
    assert hung["waited"]["reason"].startswith("Milvus did not become healthy within 1.5s: Milvus did not answer")
    assert hung["after"]["ok"], hung["after"]["reason"]

    rt = ContainerRuntime(lab.da.url, "m-a", stop_timeout=10)
    t0 = time.monotonic()
    assert rt.stop() is True
    print(f"stop confirmed after {time.monotonic() - t0:.2f}s")
    assert rt.is_running() is False
    assert rt.stop() is False                 # already stopped: fine
    r = DockerProbe(lab.da.url, "m-a", timeout=2).running()
    assert r.reason == "container m-a is not running (exited, exit code 0)"   # SIGINT: clean exit
    assert ContainerRuntime(lab.da.url, "gone", stop_timeout=1).stop() is False
    with pytest.raises(AdapterError, match="^cannot start container gone: it does not exist on the Docker engine"):
        ContainerRuntime(lab.da.url, "gone", stop_timeout=1).start()


INSERT = """
from pymilvus import MilvusClient
c = MilvusClient(uri=A["uri"])
c.create_collection("handover", dimension=4)
c.insert("handover", [{"id": i, "vector": [float(i)] * 4} for i in range(3)])
out(count=len(c.query("handover", filter="id >= 0", output_fields=["id"])))
"""
READ = """
from pymilvus import MilvusClient
c = MilvusClient(uri=A["uri"])
c.load_collection("handover")
out(ids=sorted(r["id"] for r in c.query("handover", filter="id >= 0", output_fields=["id"])))
"""


def test_shared_storage_one_milvus_at_a_time(lab, clean, shared):
    """milvus-lite locks its data dir: the second host cannot start while the first runs,
    and after the first stops, the second serves the data the first wrote."""
    create_milvus_container(lab.da, "m-a", shared)
    create_milvus_container(lab.db, "m-b", shared)
    uri_a, uri_b = f"http://{lab.a.addr}:19530", f"http://{lab.b.addr}:19530"
    assert in_ns(lab.a, START_AND_WAIT, url=lab.da.url, name="m-a", addr=f"{lab.a.addr}:19530")["ready"]["ok"]
    assert in_ns(lab.a, INSERT, uri=uri_a)["count"] == 3

    blocked = in_ns(lab.b, START_AND_WAIT, url=lab.db.url, name="m-b", addr=f"{lab.b.addr}:19530")["ready"]
    assert not blocked["ok"]
    assert blocked["reason"].startswith("container m-b stopped (exited, exit code 1) before Milvus became healthy")
    assert "DataDirLockedError" in blocked["reason"]

    assert ContainerRuntime(lab.da.url, "m-a", stop_timeout=10).stop() is True
    res = in_ns(lab.b, START_AND_WAIT, url=lab.db.url, name="m-b", addr=f"{lab.b.addr}:19530")
    assert res["ready"]["ok"], res["ready"]["reason"]
    print(f"\nhandover: m-b healthy {res['took']:.2f}s after start")
    assert in_ns(lab.b, READ, uri=uri_b)["ids"] == [0, 1, 2]
    assert ContainerRuntime(lab.db.url, "m-b", stop_timeout=10).stop() is True
