"""The read pool with real parts: Debian's nginx, milvus-lite read nodes and writer, pymilvus.

One lab for the module (havip.lab.poollab): a writer, three read nodes holding the same
collection, `havip pool run` with its nginx, and a client, each in its own network
namespace. Checks every 0.5 s, rise 2, fall 2; nginx's read timeout 1 s; the client is pymilvus
with a 5 s deadline. Each test runs 1,000 searches through the pool while something
happens to a member, and asserts that none failed at the client. One test turns
pymilvus' retry off to show what nginx itself does with a call in flight on a member
that dies: it cannot resend it (it streams gRPC request bodies), and answers it at
once with UNAVAILABLE, never a hang.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from havip.lab.poollab import PoolLab
from havip.lab.netns import wait_for
from tests.conftest import require_binary, require_root

pytestmark = [pytest.mark.root]

N = 1000


@pytest.fixture(scope="module")
def lab():
    require_root()
    require_binary("nginx")
    work = Path(tempfile.mkdtemp(prefix="hvpool", dir="/tmp"))
    pool_lab = PoolLab(work)
    try:
        t0 = time.monotonic()
        pool_lab.up()
        print(f"\nread-pool lab up in {time.monotonic() - t0:.1f}s")
        yield pool_lab
    finally:
        pool_lab.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def go(lab, tmp_path):
    return tmp_path / "go"


def _out_bound(lab) -> float:
    return lab.check["interval"] * lab.check["fall"] + 1.0


def _back_bound(lab) -> float:
    return lab.check["interval"] * lab.check["rise"] + 1.0


def _searches(lab, tmp_path, go: Path, n: int = N, threads: int = 2, retries: bool = True):
    """pymilvus as it comes (it retries UNAVAILABLE within its 5 s deadline), or with its
    retry off: then a call nginx fails is a failed search."""
    out = tmp_path / "searches.json"
    proc = lab.client_bg("searches", out, uri=lab.pool_uri, n=n, threads=threads, timeout=5.0, go_file=str(go),
                         retries=retries)
    return proc, out


def _finish(proc, out: Path) -> dict:
    proc.wait(180)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    return json.loads(out.read_text().strip().splitlines()[-1])


def _wait_started(lab, go: Path, served_before: int, at_least: int = 100) -> None:
    """Let the searches run until the pool has served `at_least` of them."""
    go.touch()
    wait_for(lambda: _served(lab) - served_before >= at_least, 60, interval=0.02, what="searches under way")


def _served(lab) -> int:
    st = lab.status()
    return sum(m["requests"] for m in st["members"]) if st else 0


def _requests(lab) -> dict[str, int]:
    return {m["address"]: m["requests"] for m in lab.status()["members"]}


def _tcp_opens(lab) -> int:
    """Connections the read nodes accepted so far (their namespaces' TcpPassiveOpens)."""
    total = 0
    for n in lab.readers:
        out = lab.hosts[n].run("nstat", "-az", "TcpPassiveOpens").stdout
        total += int(out.split("TcpPassiveOpens")[1].split()[0])
    return total


def test_searches_spread_over_every_member(lab, tmp_path, go):
    """One client connection (pymilvus keeps one): its calls still reach every member, over
    kept-alive upstream connections (the recipe opened one per client connection; without
    `keepalive`, nginx would open one per call)."""
    before, opens = _requests(lab), _tcp_opens(lab)
    go.touch()
    res = _finish(*_searches(lab, tmp_path, go, n=300, threads=1))
    assert res["failed"] == 0, res["errors"]
    # Without keepalive: 300. Measured 6 to 45: nginx drops an idle kept-alive connection
    # when the gRPC server sends a frame on it (a PING), and opens a new one later.
    assert _tcp_opens(lab) - opens < 100
    time.sleep(1.2)          # the status is rewritten every second
    after = _requests(lab)
    spread = {a: after[a] - before[a] for a in after}
    assert all(v >= 30 for v in spread.values()), spread        # least_conn over 3: ~100 each


def test_each_client_thread_has_its_own_connection(lab):
    """The tests and the benchmark run T threads "each with its own connection": grpc-core
    shares one TCP connection between channels to the same target unless each has its own
    subchannel pool (through the recipe's TCP proxy, all threads were pinned to one node)."""
    out = lab.hosts["p"].run("nstat", "-az", "TcpPassiveOpens").stdout
    before = int(out.split("TcpPassiveOpens")[1].split()[0])
    res = lab.client("searches", uri=lab.pool_uri, n=30, threads=3)
    assert res["ok"] == 30
    out = lab.hosts["p"].run("nstat", "-az", "TcpPassiveOpens").stdout
    assert int(out.split("TcpPassiveOpens")[1].split()[0]) - before >= 3


def test_member_killed_during_1000_searches(lab, tmp_path, go):
    proc, out = _searches(lab, tmp_path, go)
    _wait_started(lab, go, _served(lab))
    lab.kill("r2")
    took = lab.wait_member("r2", False, 10)
    assert took <= _out_bound(lab), f"r2 left the pool after {took:.2f}s"
    m = lab.member("r2")
    assert m["reason"].startswith("out of the pool: checks failed 2 times in a row: ") and "refused" in m["reason"]
    res = _finish(proc, out)
    assert res["ok"] == N and res["failed"] == 0, res["errors"]

    lab.restart("r2")            # recovered: serving, with the collection loaded
    took = lab.wait_member("r2", True, 10)
    assert took <= _back_bound(lab), f"r2 came back after {took:.2f}s"
    assert lab.member("r2")["reason"].startswith("back in the pool: checks passed 2 times in a row")


def test_member_hung_during_1000_searches(lab, tmp_path, go):
    proc, out = _searches(lab, tmp_path, go)
    _wait_started(lab, go, _served(lab))
    lab.signal("r3", signal.SIGSTOP)
    try:
        took = lab.wait_member("r3", False, 10)
        assert took <= _out_bound(lab), f"r3 left the pool after {took:.2f}s"
        assert "did not answer within 0.4s" in lab.member("r3")["reason"]
        # The other members kept being checked while r3 hung.
        others = [lab.member(n) for n in ("r1", "r2")]
        assert all(o["healthy"] and o["fails"] == 0 for o in others), others
        res = _finish(proc, out)
    finally:
        lab.signal("r3", signal.SIGCONT)
    assert res["ok"] == N and res["failed"] == 0, res["errors"]
    took = lab.wait_member("r3", True, 10)
    assert took <= _back_bound(lab), f"r3 came back after {took:.2f}s"


def test_a_call_in_flight_on_a_killed_member_fails_fast_without_client_retry(lab, tmp_path, go):
    """nginx retries on another member what it could not send (refused connection), but not
    a call already sent: with pymilvus' retry off, at most the calls in flight at the kill
    (one per connection) fail, each at once with UNAVAILABLE; every other call succeeds."""
    proc, out = _searches(lab, tmp_path, go, retries=False)
    _wait_started(lab, go, _served(lab))
    lab.kill("r1")
    lab.wait_member("r1", False, 10)
    res = _finish(proc, out)
    try:
        assert res["failed"] <= 2 and res["ok"] == N - res["failed"], res["errors"]
        assert all("UNAVAILABLE" in e[1] for e in res["errors"]), res["errors"]
    finally:
        lab.restart("r1")
        lab.wait_member("r1", True, 10)


def _workers(lab) -> set[int]:
    """Pids of the pool's nginx workers, old ones still finishing calls after a reload included."""
    master = int((lab.workdir / "pool" / "nginx" / "nginx.pid").read_text())
    return {int(k) for k in Path(f"/proc/{master}/task/{master}/children").read_text().split()}


def test_a_member_drained_by_config_then_killed_fails_no_call_without_client_retry(lab, tmp_path, go):
    """Planned maintenance: take the member out of pool.yaml, `systemctl reload havip-pool`
    (SIGHUP), wait until nginx's old workers finished their calls, then stop the node:
    no call fails even with pymilvus' retry off (what nginx cannot resend never exists)."""
    import yaml

    cfg_path = lab.workdir / "pool" / "pool.yaml"
    full = cfg_path.read_text()
    cfg = yaml.safe_load(full)
    cfg["read_nodes"] = [lab.addr("r1"), lab.addr("r2")]
    proc, out = _searches(lab, tmp_path, go, retries=False)
    _wait_started(lab, go, _served(lab))
    try:
        old = _workers(lab)
        cfg_path.write_text(yaml.safe_dump(cfg))
        lab.pool_proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (st := lab.status()) and len(st["members"]) == 2 and st["nginx"]["in_sync"], 10,
                 interval=0.02, what="r3 gone from the pool")
        # Drained: every worker that knew r3 has finished its calls and exited. (nginx's
        # reload is asynchronous: right after the SIGHUP the old workers still take calls.)
        wait_for(lambda: not _workers(lab) & old, 30, interval=0.02, what="nginx's old workers gone")
        lab.kill("r3")
        res = _finish(proc, out)
        assert res["ok"] == N and res["failed"] == 0, res["errors"]
    finally:
        cfg_path.write_text(full)
        if lab.milvus["r3"].poll() is not None:
            lab.restart("r3")
        lab.pool_proc.send_signal(signal.SIGHUP)
    wait_for(lambda: lab._all_in() and len(lab.status()["members"]) == 3, 20, interval=0.05, what="r3 back")


def test_inserts_reach_the_writer_only(lab):
    """Small and large inserts (60,000 rows, about 2.5 MB: nginx's default 1m body limit
    would answer 413) land on the writer, never on a read node."""
    counts = {n: lab.client("count", uri=lab.uri(n))["count"] for n in ("w", *lab.readers)}
    lab.client("insert", uri=lab.pool_uri, start=100_000, n=25)
    lab.client("insert", uri=lab.pool_uri, start=200_000, n=60_000)
    assert lab.client("count", uri=lab.uri("w"))["count"] == counts["w"] + 60_025
    for n in lab.readers:
        assert lab.client("count", uri=lab.uri(n))["count"] == counts[n]
    time.sleep(1.2)
    assert lab.status()["writer"]["requests"] > 0


def test_nginx_reload_under_load_drops_no_rpc(lab, tmp_path, go):
    """With pymilvus' retry off: a reload itself fails no call (old workers finish theirs)."""
    proc, out = _searches(lab, tmp_path, go, retries=False)
    _wait_started(lab, go, _served(lab))
    for _ in range(5):
        lab.nginx_reload()
        time.sleep(0.2)
    res = _finish(proc, out)
    assert res["ok"] == N and res["failed"] == 0, res["errors"]


def test_sighup_takes_a_member_out_of_the_config_and_back(lab, tmp_path):
    import yaml

    cfg_path = lab.workdir / "pool" / "pool.yaml"
    full = cfg_path.read_text()
    cfg = yaml.safe_load(full)
    cfg["read_nodes"] = [lab.addr("r1"), lab.addr("r2")]
    try:
        cfg_path.write_text(yaml.safe_dump(cfg))
        lab.pool_proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (st := lab.status()) and len(st["members"]) == 2 and st["nginx"]["in_sync"], 10,
                 interval=0.05, what="r3 gone from the pool")
        conf = (lab.workdir / "pool" / "nginx" / "nginx.conf").read_text()
        assert lab.addr("r3") not in conf and lab.addr("r1") in conf
        res = lab.client("searches", uri=lab.pool_uri, n=200, threads=1)
        assert res["ok"] == 200
    finally:
        cfg_path.write_text(full)
        lab.pool_proc.send_signal(signal.SIGHUP)
    wait_for(lambda: lab._all_in() and len(lab.status()["members"]) == 3, 10, interval=0.05, what="r3 back")


def test_havipctl_pool_status(lab):
    table = subprocess.run([sys.executable, "-m", "havip.ctl", "pool", "status", "--state", str(lab.status_path)],
                           capture_output=True, text=True, timeout=30)
    assert table.returncode == 0, table.stderr
    for n in lab.readers:
        assert lab.addr(n) in table.stdout
    assert "3/3 read nodes healthy" in table.stdout
    js = subprocess.run([sys.executable, "-m", "havip.ctl", "pool", "status", "--json", "--state",
                         str(lab.status_path)], capture_output=True, text=True, timeout=30)
    st = json.loads(js.stdout)
    assert [m["healthy"] for m in st["members"]] == [True, True, True]


def test_pool_process_maps_no_numpy_or_pandas(lab):
    """numpy and pandas load C extensions: none in the running pool (pymilvus, pure Python,
    is checked in tests/unit/test_pool_daemon.py on the same import path)."""
    pid = lab.pool_proc.pid
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "numpy" not in maps and "pandas" not in maps


def test_the_recipe_s_stream_proxy_pins_a_client_to_one_node(lab):
    """The finding the pool answers: `stream` balances TCP connections, so the 300 calls of
    one pymilvus client all go to the node its one connection was sent to."""
    from string import Template

    from tests.unit.test_pool_render import RECIPE

    prefix = lab.workdir / "recipe"
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(Template((RECIPE / "recipe-fixed.conf.tmpl").read_text()).substitute(
        prefix=str(prefix), listen="0.0.0.0:19585",
        servers="\n".join(f"        server {lab.addr(n)};" for n in lab.readers)))
    nginx = require_binary("nginx")
    proc = lab.hosts["p"].popen([nginx, "-c", str(conf), "-p", f"{prefix}/", "-g", "daemon off;"],
                                stderr=subprocess.DEVNULL)
    try:
        uri = f"http://{lab.hosts['p'].addr}:19585"
        wait_for(lambda: lab.client("searches", uri=uri, n=1, threads=1)["ok"] == 1, 30, interval=0.2,
                 what="the recipe's nginx answering")
        res = lab.client("searches", uri=uri, n=300, threads=1)
        assert res["ok"] == 300
        sessions = wait_for(lambda: (prefix / "access.log").read_text().splitlines(), 10, what="stream log")
        # One line per TCP session: the probe's, and the 300 searches' one connection.
        assert len(sessions) == 2
        assert all(len(line.split('"')[1].split(",")) == 1 for line in sessions)
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(10)
