"""Membership with a fake clock; the loop with a fake nginx; the daemon's light imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from havip.pool import health
from havip.pool.config import parse
from havip.pool.daemon import PoolDaemon
from havip.pool.nginx import NginxInvalid
from havip.pool.probe import Result
from tests.conftest import REPO

A, B, C = "198.18.0.31:19530", "198.18.0.32:19530", "198.18.0.33:19530"


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeNginx:
    """Records what the loop asks; `refuse` makes `nginx -t` fail."""

    def __init__(self, tmp_path):
        self.prefix = tmp_path
        self.conf = tmp_path / "nginx.conf"
        self.installed: list[str] = []
        self.calls: list[str] = []
        self.refuse: str | None = None
        self.running: int | None = None

    def install(self, text: str) -> None:
        if self.refuse:
            raise NginxInvalid(self.refuse)
        self.installed.append(text)
        self.calls.append("install")

    def pid(self):
        return self.running

    def start(self) -> int:
        self.calls.append("start")
        self.running = 4242
        return self.running

    def reload(self) -> None:
        self.calls.append("reload")

    def reopen(self) -> None:
        self.calls.append("reopen")

    def stop(self) -> None:
        self.calls.append("stop")


def _cfg(tmp_path, **kw):
    return parse({"writer": "198.18.0.21:19530", "read_nodes": [A, B, C], "status_file": str(tmp_path / "st.json"),
                  "check": {"interval": 0.5, "timeout": 0.4, "rise": 2, "fall": 3}, **kw}, local=lambda h: False)


def _ok(clock, ok=True, why="fine"):
    return Result(ok, why, 0.01, clock())


# ------------------------------------------------------------------ hysteresis


def test_first_result_decides_then_rise_and_fall():
    m = health.Member(A)
    m, said = health.observe(m, True, "healthy", 0.0, rise=2, fall=3)
    assert m.healthy is True and said == "in the pool: its first check passed (healthy)"
    for t in (0.5, 1.0):
        m, said = health.observe(m, False, "refused", t, 2, 3)
        assert said is None and m.healthy is True
    m, said = health.observe(m, False, "refused", 1.5, 2, 3)
    assert (m.healthy, m.since) == (False, 1.5) and said == "out of the pool: checks failed 3 times in a row: refused"
    m, said = health.observe(m, True, "healthy", 2.0, 2, 3)
    assert said is None
    m, said = health.observe(m, False, "refused", 2.5, 2, 3)       # the streak starts again
    m, said = health.observe(m, True, "healthy", 3.0, 2, 3)
    assert said is None and m.healthy is False
    m, said = health.observe(m, True, "healthy", 3.5, 2, 3)
    assert said == "back in the pool: checks passed 2 times in a row (healthy)" and m.since == 3.5
    assert m.changes == 3


def test_a_member_leaves_within_interval_times_fall_on_the_fake_clock(tmp_path):
    """Checks every 0.5 s, fall 3: a member that dies between two checks is out at most
    3 x 0.5 s later, and the others' results keep coming meanwhile."""
    clock = Clock(0.0)
    d = PoolDaemon(_cfg(tmp_path), FakeNginx(tmp_path), clock=clock)
    died_at = 1.2
    out_at = None
    for step in range(12):
        clock.t = step * 0.5
        for addr in (A, B, C):
            said = d.handle(addr, _ok(clock, not (addr == B and clock.t > died_at), "refused"))
            if said and said.startswith("out") and out_at is None:
                out_at = clock.t
    assert out_at is not None and out_at - died_at <= 0.5 * 3
    assert d.members[B].since == out_at and d.members[A].healthy and d.members[C].healthy


# ------------------------------------------------------------------ the loop and nginx


def test_nginx_starts_once_every_member_answered_and_reloads_only_on_change(tmp_path):
    clock, ng = Clock(), FakeNginx(tmp_path)
    d = PoolDaemon(_cfg(tmp_path), ng, clock=clock)
    d.handle(A, _ok(clock))
    d.tick()
    assert ng.calls == []                        # B and C not checked yet
    d.handle(B, _ok(clock))
    d.handle(C, _ok(clock, False, "refused"))
    d.tick()
    assert ng.calls == ["install", "start"]
    assert f"server {C} max_fails=1 fail_timeout=2s down;" in ng.installed[-1]
    for _ in range(5):                           # the same membership: nothing to do
        d.handle(A, _ok(clock))
        d.tick()
    assert ng.calls == ["install", "start"]
    d.handle(C, _ok(clock))
    d.handle(C, _ok(clock))
    d.tick()
    assert ng.calls == ["install", "start", "install", "reload"]
    assert "down;" not in ng.installed[-1]
    st = d.status()
    assert st["nginx"]["in_sync"] and [m["in_nginx"] for m in st["members"]] == [True, True, True]


def test_a_render_nginx_refuses_is_never_applied_and_is_reported(tmp_path):
    clock, ng = Clock(), FakeNginx(tmp_path)
    d = PoolDaemon(_cfg(tmp_path), ng, clock=clock)
    for a in (A, B, C):
        d.handle(a, _ok(clock))
    d.tick()
    ng.refuse = 'unknown directive "Ip" in nginx.conf.new:22'
    for _ in range(3):
        d.handle(B, _ok(clock, False, "refused"))
    d.tick()
    d.tick()
    assert ng.calls == ["install", "start"]      # no reload of a refused render, no retry loop
    st = d.status()
    assert st["nginx"]["render_errors"] == 1 and not st["nginx"]["in_sync"]
    assert st["nginx"]["last_error"] == ('rendered config refused by nginx -t, not applied: '
                                         'unknown directive "Ip" in nginx.conf.new:22')
    ng.refuse = None
    for _ in range(3):
        d.handle(C, _ok(clock, False, "refused"))   # membership changes again: rendered afresh
    d.tick()
    assert ng.calls == ["install", "start", "install", "reload"]
    assert d.status()["nginx"]["in_sync"] and d.status()["nginx"]["last_error"] is None


def test_status_file_and_access_log_counts(tmp_path):
    import json

    clock, ng = Clock(), FakeNginx(tmp_path)
    d = PoolDaemon(_cfg(tmp_path), ng, clock=clock)
    for a in (A, B, C):
        d.handle(a, _ok(clock))
    d.tick()
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(f"1.0 /milvus.proto.milvus.MilvusService/Search {A} 200 0 0.001\n"
                   f"1.1 /milvus.proto.milvus.MilvusService/Search {B}, {C} 200 0 1.002\n"
                   f"1.2 /milvus.proto.milvus.MilvusService/Insert 198.18.0.21:19530 200 0 0.004\n"
                   f"1.3 /milvus.proto.milvus.MilvusService/Search - 204 - 0.000\n")
    d.write_status()
    st = json.loads((tmp_path / "st.json").read_text())
    assert {m["address"]: (m["requests"], m["retried_elsewhere"]) for m in st["members"]} == {
        A: (1, 0), B: (0, 1), C: (1, 0)}
    assert st["writer"]["requests"] == 1 and st["answered_unavailable"] == 1


def test_status_table_and_exit_codes(tmp_path):
    from havip.pool import status

    clock, ng = Clock(), FakeNginx(tmp_path)
    d = PoolDaemon(_cfg(tmp_path), ng, clock=clock)
    for a in (A, B):
        d.handle(a, _ok(clock))
    d.handle(C, _ok(clock, False, f"{C} refused the connection (nothing listening)"))
    d.tick()
    st = status.read(tmp_path / "st.json")
    text = status.render(st)
    assert "2/3 read nodes healthy" in text
    assert f"{C}  OUT" in text and "out of the pool: its first check failed" in text
    assert status.exit_code(st) == status.EXIT_DEGRADED
    with pytest.raises(status.NotRunning, match="not running: no status file"):
        status.read(tmp_path / "missing.json")


# ------------------------------------------------------------------ light imports


def test_the_pool_daemon_never_imports_grpcio_pymilvus_numpy_or_pandas():
    """The `havip pool run` import path, plus real checks of both kinds (a unix socket that
    does not exist: no traffic outside a namespace), with grpcio, pymilvus, numpy and
    pandas made impossible to import. Regression: the checks were grpcio channels (16 MB
    of RSS for its C core) and a hand-written protobuf decoder."""
    code = ("import sys\n"
            "FORBIDDEN = ('grpc', 'pymilvus', 'numpy', 'pandas')\n"
            "tried = []\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in FORBIDDEN:\n"
            "            tried.append(name)\n"
            "            raise ImportError(name + ' is blocked by the test')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import havip.cli, havip.pool.cli\n"
            "from havip.pool import checker, daemon, nginx, probe, status, render, accesslog\n"
            "for kind in ('milvus', 'grpc-health'):\n"
            "    r = probe.GrpcCheck('unix:/nonexistent/havip-test.sock', kind, 0.2, collections=('c',))()\n"
            "    assert not r.ok and 'No such file' in r.reason, r\n"
            "assert 'h2' in sys.modules\n"
            "print(tried, sorted(m for m in sys.modules if m.split('.')[0] in FORBIDDEN))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] []"


def test_access_log_lines():
    from havip.pool.accesslog import Counts, parse_line

    c = Counts()
    parse_line("1.0 /milvus.proto.milvus.MilvusService/Search 10.0.0.1:1, 10.0.0.2:1 200 0 1.001", c)
    parse_line("1.0 /milvus.proto.milvus.MilvusService/Search 10.0.0.1:1 : 10.0.0.3:1 200 0 1.001", c)
    parse_line("garbage", c)
    assert c.served == {"10.0.0.2:1": 1, "10.0.0.3:1": 1} and c.retried == {"10.0.0.1:1": 2} and c.bad_lines == 1


def test_prometheus_metrics_per_member(tmp_path):
    from prometheus_client import generate_latest

    from havip.pool.status import PoolMetrics

    clock, ng, metrics = Clock(), FakeNginx(tmp_path), PoolMetrics("pool")
    d = PoolDaemon(_cfg(tmp_path), ng, clock=clock, metrics=metrics)
    for a in (A, B):
        d.handle(a, _ok(clock))
    for _ in range(3):
        d.handle(C, _ok(clock, False, "refused"))
    d.tick()
    text = generate_latest(metrics.registry).decode()
    assert f'havip_pool_member_up{{instance="pool",member="{A}"}} 1.0' in text
    assert f'havip_pool_member_up{{instance="pool",member="{C}"}} 0.0' in text
    assert f'havip_pool_member_transitions_total{{instance="pool",member="{C}",to="out"}} 1.0' in text
    assert 'havip_pool_nginx_applies_total{instance="pool",result="ok"} 1.0' in text


def test_access_log_moved_aside_when_large(tmp_path):
    from havip.pool.accesslog import Tail

    log = tmp_path / "access.log"
    reopened = []
    tail = Tail(log, reopen=lambda: reopened.append(1), max_bytes=100)
    log.write_text(f"1.0 /x {A} 200 0 0.001\n" * 5)
    assert tail.poll().served[A] == 5 and reopened == [1] and (tmp_path / "access.log.1").exists()
    log.write_text(f"1.0 /x {B} 200 0 0.001\n")         # nginx reopened a fresh file
    assert tail.poll().served == {A: 5, B: 1}


class FakeChecker:
    def __init__(self, address, cfg):
        self.address, self.interval = address, cfg.check.interval
        self.started = self.stopped = False

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True


def test_sighup_reconfigures_members_and_reloads_nginx(tmp_path):
    clock, ng = Clock(), FakeNginx(tmp_path)
    d = PoolDaemon(_cfg(tmp_path), ng, clock=clock)
    d._make_checker = FakeChecker
    d._checkers = {a: FakeChecker(a, d.cfg) for a in (A, B, C)}
    old = dict(d._checkers)
    for a in (A, B, C):
        d.handle(a, _ok(clock))
    d.tick()
    D = "198.18.0.34:19530"
    said = d.reconfigure(parse({"writer": "198.18.0.21:19530", "read_nodes": [A, B, D],
                                "status_file": str(tmp_path / "st.json"),
                                "check": {"interval": 0.5, "timeout": 0.4, "rise": 2, "fall": 3}},
                               local=lambda h: False))
    assert said == "config reloaded: 3 read nodes"
    assert old[C].stopped and not old[A].stopped and d._checkers[D].started
    assert d.members[A].healthy and d.members[D].healthy is None
    d.tick()
    assert ng.calls == ["install", "start"]          # D not checked yet: nothing rendered
    d.handle(D, _ok(clock))
    d.tick()
    assert ng.calls == ["install", "start", "install", "reload"]
    assert f"server {D} " in ng.installed[-1] and f"server {C} " not in ng.installed[-1]


def test_sighup_refuses_keys_that_need_a_restart(tmp_path):
    clock, ng = Clock(), FakeNginx(tmp_path)
    d = PoolDaemon(_cfg(tmp_path), ng, clock=clock)
    d._make_checker, d._checkers = FakeChecker, {}
    said = d.reconfigure(_cfg(tmp_path, nginx={"prefix": "/srv/elsewhere"}))
    assert said == "new config not applied: nginx.prefix change only with a restart"
    assert d.cfg.nginx.prefix == "/var/lib/havip/pool"
