"""The stale session sweep (havip.runtime.sessions) against an unkind fake etcd: slow,
failing, our server's keys appearing late or already there, a lease lost mid-sweep, a
Milvus cluster's etcd. The key layouts are those the real Milvus 2.3.5 standalone
server wrote in the lab (bench/milvus_takeover.py): every component of one server under
one ServerID, exclusive coordinator keys without a suffix."""

from __future__ import annotations

import json

import pytest

from havip.config import parse
from havip.errors import ConfigError
from havip.runtime.etcdclient import EtcdError, b64, unb64
from havip.runtime.sessions import Session, SessionSweep, decide, parse_sessions, session_prefix

PREFIX = "by-dev/meta/session/"
COORDS = ("rootcoord", "datacoord", "querycoord", "indexcoord")
NODES = ("querynode", "datanode", "indexnode", "proxy")


def server(sid: int, host: str = "198.18.0.11", coords: bool = True, nodes=NODES) -> dict[str, dict]:
    """The session keys one standalone server writes: {key: value}."""
    keys = {f"{n}-{sid}": {"ServerID": sid, "ServerName": n, "Address": f"{host}:{21000 + i}"}
            for i, n in enumerate(nodes)}
    if coords:
        keys.update({c: {"ServerID": sid, "ServerName": c, "Address": f"{host}:{53100 + i}", "Exclusive": True}
                     for i, c in enumerate(COORDS)})
    return keys


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class FakeEtcd:
    """etcd's /v3 gateway as the sweep calls it. `script` is [(time, action)] applied as
    the clock passes it: ("put", keys, lease) / ("down", seconds) / ("expire", lease)."""

    def __init__(self, clock: Clock, *, latency: float = 0.0):
        self.clock = clock
        self.latency = latency
        self.kv: dict[str, tuple[str, str, int]] = {}   # key -> (value, lease, create_revision)
        self.rev = 100
        self.script: list[tuple[float, tuple]] = []
        self.down_until = -1.0
        self.calls: list[tuple[str, dict]] = []
        self.revoked: list[str] = []
        self.fail_revoke: set[str] = set()
        self.kv["by-dev/meta/session/id"] = ("1", "0", 1)        # the ServerID counter: not a session

    def put(self, keys: dict[str, dict], lease: str) -> None:
        for k, v in keys.items():
            self.rev += 1
            self.kv[PREFIX + k] = (json.dumps(v), lease, self.rev)

    def _tick(self) -> None:
        for t, action in list(self.script):
            if t <= self.clock.now:
                self.script.remove((t, action))
                if action[0] == "put":
                    self.put(action[1], action[2])
                elif action[0] == "down":
                    self.down_until = t + action[1]
                elif action[0] == "expire":
                    self.kv = {k: v for k, v in self.kv.items() if v[1] != action[1]}

    def call(self, path: str, body: dict, *, deadline: float) -> dict:
        self.clock.now += self.latency
        self._tick()
        self.calls.append((path, body))
        if self.clock.now > deadline:
            raise EtcdError("etcd unreachable: timed out", retry=True)
        if self.clock.now < self.down_until:
            raise EtcdError("etcd unreachable: connection refused", retry=True)
        if path == "kv/range":
            lo, hi = unb64(body["key"]), unb64(body["range_end"])
            return {"kvs": [{"key": b64(k), "value": b64(v), "lease": lease, "create_revision": str(rev)}
                            for k, (v, lease, rev) in sorted(self.kv.items()) if lo <= k < hi]}
        if path == "lease/revoke":
            lease = body["ID"]
            if lease in self.fail_revoke:
                raise EtcdError("etcd unreachable: timed out", retry=True)
            if not any(v[1] == lease for v in self.kv.values()):
                raise EtcdError("requested lease not found")
            self.revoked.append(lease)
            self.kv = {k: v for k, v in self.kv.items() if v[1] != lease}
            return {}
        raise AssertionError(path)


class Log:
    def __init__(self):
        self.lines: list[tuple[str, str, dict]] = []

    def info(self, event, **kw):
        self.lines.append(("info", event, kw))

    def warning(self, event, **kw):
        self.lines.append(("warning", event, kw))

    error = warning


class Metrics:
    def __init__(self):
        self.seen: list[tuple[str, int]] = []

    def session_sweep(self, outcome: str, revoked: int) -> None:
        self.seen.append((outcome, revoked))


def sweep(etcd: FakeEtcd, clock: Clock, timeout: float = 30.0, **kw) -> tuple[SessionSweep, Log, Metrics]:
    log, metrics = Log(), Metrics()
    return SessionSweep(etcd.call, timeout=timeout, log=log, metrics=metrics, clock=clock, sleep=clock.sleep,
                        **kw), log, metrics


def old_leases(etcd: FakeEtcd, sid: int = 1) -> None:
    """The killed server's sessions, one lease per key as Milvus grants them."""
    for i, (k, v) in enumerate(server(sid).items()):
        etcd.put({k: v}, f"7587{sid}{i:02d}")


def ours_at(etcd: FakeEtcd, t: float, sid: int = 2, coords_later: float | None = None) -> None:
    """Our server registers its node sessions at `t` (its coordinators only once the
    exclusive keys are free, which the sweep is there to hasten)."""
    etcd.script.append((t, ("put", server(sid, host="198.18.0.21", coords=False), f"9999{sid}")))


# ------------------------------------------------------------------ the pure decision

def sessions_of(*servers: dict[str, dict]) -> list[Session]:
    kvs, rev = [], 10
    for keys in servers:
        for k, v in keys.items():
            rev += 1
            kvs.append({"key": b64(PREFIX + k), "value": b64(json.dumps(v)), "lease": "5", "create_revision": rev})
    kvs.append({"key": b64(PREFIX + "id"), "value": b64("2")})
    return parse_sessions(kvs, PREFIX)


def test_parse_skips_the_counter_and_keeps_every_session():
    got = sessions_of(server(1))
    assert {s.key for s in got} == {*COORDS, "querynode-1", "datanode-1", "indexnode-1", "proxy-1"}
    assert {s.server_id for s in got} == {1}


def test_decide_waits_while_only_the_old_servers_sessions_are_there():
    old = sessions_of(server(1))
    assert decide(frozenset({1}), old).ours is None           # ours has not registered yet


def test_decide_takes_a_server_that_appeared_after_first_contact_as_ours():
    now = sessions_of(server(1), server(2, coords=False))
    v = decide(frozenset({1}), now)
    assert v.ours == 2 and {s.server_id for s in v.stale} == {1} and len(v.stale) == 8


def test_decide_with_a_late_first_contact_two_servers_seen_at_once():
    # What the lab's server showed: our node sessions were there at the first answer.
    now = sessions_of(server(1), server(2, coords=False))
    v = decide(frozenset({1, 2}), now)
    assert v.ours == 2 and all(s.server_id == 1 for s in v.stale)


def test_decide_never_calls_the_highest_server_stale():
    # A crash loop: servers 1 and 2 left sessions, ours (3) not yet registered: 1 is
    # stale (older than 2), 2 is never touched by this verdict.
    now = sessions_of(server(1), server(2, coords=False))
    v = decide(frozenset({1, 2}), now)
    assert all(s.server_id < 2 for s in v.stale)


def test_decide_waits_until_our_server_shows_a_standalone_signature():
    one_node = sessions_of(server(1), server(2, coords=False, nodes=("querynode",)))
    assert decide(frozenset({1}), one_node).ours is None


def test_decide_refuses_a_cluster_etcd():
    cluster = sessions_of(*(server(i, coords=(i == 1), nodes=("querynode",)) for i in range(1, 6)))
    v = decide(frozenset({1, 2, 3, 4, 5}), cluster)
    assert v.refused and "cluster" in v.refused and not v.stale


# ------------------------------------------------------------------ the sweep against the fake

def test_sweep_revokes_the_old_servers_leases_once_ours_registers():
    clock = Clock()
    etcd = FakeEtcd(clock)
    old_leases(etcd)
    ours_at(etcd, 1.5)
    s, log, metrics = sweep(etcd, clock)
    res = s.run(lambda: True)
    assert res.ok and res.outcome == "cleared" and res.ours == 2
    assert len(etcd.revoked) == 8 and all(lease.startswith("75871") for lease in etcd.revoked)
    assert {k for k in etcd.kv if "session/" in k} == {PREFIX + "id", *(PREFIX + f"{n}-2" for n in NODES)}
    assert res.reason.startswith("revoked the leases of 8 stale Milvus session(s) of ServerID [1]")
    assert metrics.seen == [("cleared", 8)]
    assert log.lines[-1][1] == "session_sweep" and log.lines[-1][2]["reason"] == res.reason


def test_sweep_survives_an_etcd_that_is_down_then_slow():
    clock = Clock()
    etcd = FakeEtcd(clock, latency=0.4)
    old_leases(etcd)
    etcd.script.append((0.0, ("down", 5.0)))           # the embedded etcd not up yet
    ours_at(etcd, 7.0)
    s, _, _ = sweep(etcd, clock)
    res = s.run(lambda: True)
    assert res.outcome == "cleared" and len(etcd.revoked) == 8


def test_sweep_gives_up_at_its_deadline_and_says_why():
    clock = Clock()
    etcd = FakeEtcd(clock)
    etcd.script.append((0.0, ("down", 100.0)))
    s, log, metrics = sweep(etcd, clock, timeout=10)
    res = s.run(lambda: True)
    assert not res.ok and res.outcome == "gave_up" and "etcd never answered within 10s" in res.reason
    assert clock.now < 11
    assert log.lines[-1][0] == "warning" and metrics.seen == [("gave_up", 0)]


def test_sweep_gives_up_when_our_server_never_registers_and_revokes_nothing():
    clock = Clock()
    etcd = FakeEtcd(clock)
    old_leases(etcd)
    s, _, _ = sweep(etcd, clock, timeout=5)
    res = s.run(lambda: True)
    assert res.outcome == "gave_up" and etcd.revoked == []
    assert "could not be told apart" in res.reason


def test_sweep_refuses_without_the_lease_and_asks_etcd_nothing():
    clock = Clock()
    etcd = FakeEtcd(clock)
    old_leases(etcd)
    s, _, metrics = sweep(etcd, clock)
    res = s.run(lambda: False)
    assert res.outcome == "refused" and "does not hold the storage lease" in res.reason
    assert etcd.calls == [] and metrics.seen == [("refused", 0)]


def test_sweep_checks_the_lease_again_before_revoking():
    clock = Clock()
    etcd = FakeEtcd(clock)
    old_leases(etcd)
    ours_at(etcd, 1.0)
    held = iter([True, False])
    s, _, _ = sweep(etcd, clock)
    res = s.run(lambda: next(held))
    assert res.outcome == "refused" and "lost during the sweep" in res.reason and etcd.revoked == []


def test_sweep_counts_leases_that_expired_meanwhile_as_cleared_and_reports_failures():
    clock = Clock()
    etcd = FakeEtcd(clock)
    old_leases(etcd)
    ours_at(etcd, 1.0)
    etcd.fail_revoke = {"7587104"}             # rootcoord (after the 4 nodes): etcd times out
    s, _, metrics = sweep(etcd, clock)
    res = s.run(lambda: True)
    assert res.outcome == "failed" and not res.ok and "not revoked: rootcoord" in res.reason
    assert len(etcd.revoked) == 7 and metrics.seen == [("failed", 7)]


def test_sweep_with_nothing_stale_says_so():
    clock = Clock()
    etcd = FakeEtcd(clock)
    ours_at(etcd, 0.5)                          # a fresh data directory
    s, _, _ = sweep(etcd, clock)
    res = s.run(lambda: True)
    assert res.ok and res.outcome == "none_stale" and etcd.revoked == []


def test_sweep_never_raises_whatever_etcd_answers():
    clock = Clock()

    def broken(path, body, *, deadline):
        return {"kvs": [{"key": "!!not base64", "value": None}]}
    log, metrics = Log(), Metrics()
    s = SessionSweep(broken, timeout=2, log=log, metrics=metrics, clock=clock, sleep=clock.sleep)
    res = s.run(lambda: True)
    assert res.outcome in ("failed", "gave_up") and metrics.seen[0][0] == res.outcome


def test_session_prefix_follows_milvus_root_path():
    assert session_prefix("by-dev") == PREFIX
    assert session_prefix("/milvus/prod/") == "milvus/prod/meta/session/"


# ------------------------------------------------------------------ config

BASE = {"interface": "eth0", "virtual_router_id": 51, "virtual_ipaddresses": ["192.168.1.104/24"]}


def test_config_sessions_defaults_and_the_lease_requirement():
    cfg = parse({**BASE, "milvus": {"container": "milvus", "data_path": "/data"}})
    assert cfg.milvus.sessions.clear_stale is False
    assert cfg.milvus.sessions.etcd == "http://127.0.0.1:2379" and cfg.milvus.sessions.root_path == "by-dev"
    on = parse({**BASE, "milvus": {"container": "milvus", "data_path": "/data", "sessions": {"clear_stale": True}}})
    assert on.milvus.sessions.clear_stale
    with pytest.raises(ConfigError) as err:
        parse({**BASE, "milvus": {"container": "milvus", "lease": False, "sessions": {"clear_stale": True,
                                                                                  "root_path": "a b"}}})
    text = "\n".join(err.value.problems)
    assert "milvus.sessions.root_path: a b: must be Milvus' etcd.rootPath" in text
    with pytest.raises(ConfigError) as err:
        parse({**BASE, "milvus": {"container": "milvus", "lease": False, "sessions": {"clear_stale": True}}})
    assert err.value.problems == ["milvus.sessions.clear_stale: true: needs the storage lease (milvus.lease): "
                                  "only the lease proves that no other Milvus runs, which is what makes the old "
                                  "server's sessions stale"]


# ------------------------------------------------------------------ the start path

class Engine:
    """The Docker engine as ContainerRuntime.start uses it."""

    def __init__(self, running: bool):
        self.running = running
        self.started = 0

    def inspect(self, name):
        return {"State": {"Running": self.running}}

    def api(self):
        return self

    def start(self, name):
        self.started += 1
        self.running = True


def runtime_with(engine: Engine, after_start) -> object:
    from havip.runtime.container import ContainerRuntime

    rt = ContainerRuntime("unix:///nonexistent.sock", "milvus", 5, after_start=after_start)
    rt.engine = engine
    return rt


def test_the_sweep_starts_after_each_start_of_ours_only():
    calls = []
    engine = Engine(running=False)
    runtime_with(engine, lambda: calls.append("sweep")).start()
    assert engine.started == 1 and calls == ["sweep"]
    runtime_with(engine, lambda: calls.append("sweep")).start()      # already running: not ours to sweep
    assert engine.started == 1 and calls == ["sweep"]


def test_a_failing_sweep_never_fails_the_start():
    def boom():
        raise RuntimeError("thread limit")
    engine = Engine(running=False)
    runtime_with(engine, boom).start()
    assert engine.started == 1


def test_the_clearer_runs_in_its_own_thread_and_reports_a_dead_etcd_in_one_sentence():
    from havip.runtime.sessions import StaleSessionClearer

    log = Log()
    clearer = StaleSessionClearer("http://127.0.0.1:9", "by-dev", 1.0, lambda: True, log=log, request_timeout=0.2)
    t = clearer()
    t.join(10)
    assert not t.is_alive() and clearer.last.outcome == "gave_up"
    assert "etcd never answered within 1s" in clearer.last.reason
    assert log.lines[-1][0] == "warning" and log.lines[-1][1] == "session_sweep"


def test_the_sweeps_are_counted_in_prometheus_metrics():
    from havip.metrics import Metrics as Real

    m = Real()
    m.session_sweep("cleared", 8)
    m.session_sweep("gave_up", 0)
    get = m.registry.get_sample_value
    assert get("havip_session_sweeps_total", {"outcome": "cleared"}) == 1
    assert get("havip_session_sweeps_total", {"outcome": "gave_up"}) == 1
    assert get("havip_sessions_revoked_total") == 8
