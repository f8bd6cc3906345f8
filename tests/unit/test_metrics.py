"""Metrics: registry content after the daemon's calls, and a real scrape over HTTP."""

from __future__ import annotations

import re
import socket
import urllib.request

import pytest
from prometheus_client import REGISTRY

from havip.errors import AdapterError, ConfigError
from havip.metrics import Metrics, parse_listen
from tests.conftest import require

STATUS = {
    "state": "master", "priority": {"configured": 110, "effective": 254},
    "checks": [{"name": "docker", "ok": True, "latency": 0.004, "reason": "running", "at": 1.0},
               {"name": "milvus", "ok": False, "latency": 1.0, "reason": "timeout", "at": 1.0}],
    "healthy": True, "vip_attached": True, "paused": False,
    "lease": {"path": "/s/.havip-lease", "held_here": True, "holder": "h1", "state": "held", "epoch": 2},
    "container_timings": {"start": 0.8, "ready": 4.2, "stop": 2.5},
}


@pytest.fixture
def metrics():
    m = Metrics({"vrrp_instance": "master", "interface": "eth0", "vrid": 51})
    yield m
    m.close()


def value(m: Metrics, name: str, **labels) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_counters_pushed_by_the_daemon(metrics):
    metrics.transition("init", "backup")
    metrics.transition("backup", "master")
    metrics.transition("backup", "master")
    metrics.adverts_sent.inc()          # the executor's call
    metrics.adverts_received.inc(3)
    metrics.drops.labels(reason="bad_ttl").inc()   # the loop's call
    metrics.drops.labels(reason="bad_ttl").inc()
    assert value(metrics, "havip_transitions_total", **{"from": "backup", "to": "master"}) == 2
    assert value(metrics, "havip_transitions_total", **{"from": "init", "to": "backup"}) == 1
    assert value(metrics, "havip_state", havip_state="master") == 1
    assert value(metrics, "havip_state", havip_state="backup") == 0
    assert value(metrics, "havip_adverts_sent_total") == 1
    assert value(metrics, "havip_adverts_received_total") == 3
    assert value(metrics, "havip_drops_total", reason="bad_ttl") == 2
    assert value(metrics, "havip_instance_info", vrrp_instance="master", interface="eth0", vrid="51") == 1


def test_observe_sets_the_snapshot_gauges(metrics):
    metrics.observe(STATUS)
    assert value(metrics, "havip_state", havip_state="master") == 1
    assert value(metrics, "havip_effective_priority") == 254
    assert value(metrics, "havip_configured_priority") == 110
    assert value(metrics, "havip_check_ok", check="docker") == 1
    assert value(metrics, "havip_check_ok", check="milvus") == 0
    assert value(metrics, "havip_check_latency_seconds", check="milvus") == 1.0
    assert value(metrics, "havip_healthy") == 1
    assert value(metrics, "havip_vip_attached") == 1
    assert value(metrics, "havip_paused") == 0
    assert value(metrics, "havip_lease_held") == 1
    assert value(metrics, "havip_container_start_seconds") == pytest.approx(5.0)
    assert value(metrics, "havip_container_stop_seconds") == 2.5
    metrics.observe({"healthy": None, "state": "fault"})      # partial status: the rest is kept
    assert value(metrics, "havip_healthy") == -1
    assert value(metrics, "havip_state", havip_state="fault") == 1
    assert value(metrics, "havip_effective_priority") == 254
    metrics.observe({"lease": None})
    assert value(metrics, "havip_lease_held") == -1


def test_failover_and_container_durations(metrics):
    metrics.failover_done(1.23)
    metrics.container_started(4.5)
    metrics.container_stopped(2.0)
    assert value(metrics, "havip_last_failover_seconds") == 1.23
    assert value(metrics, "havip_container_start_seconds") == 4.5
    assert value(metrics, "havip_container_stop_seconds") == 2.0


def test_registries_are_private():
    a, b = Metrics(), Metrics()              # would raise "Duplicated timeseries" on a shared registry
    a.adverts_sent.inc()
    assert b.registry.get_sample_value("havip_adverts_sent_total") == 0
    assert REGISTRY.get_sample_value("havip_adverts_sent_total") is None


def scrape(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=3) as resp:
        assert resp.status == 200
        return resp.read().decode()


def test_serve_on_loopback_and_scrape(metrics):
    calls = []

    def refresh():
        calls.append(1)
        return {**STATUS, "priority": {"configured": 110, "effective": 100 + len(calls)}}

    metrics.transition("backup", "master")
    host, port = metrics.serve("127.0.0.1:0", refresh=refresh)
    assert host == "127.0.0.1" and port > 0
    text = scrape(host, port)
    assert 'havip_transitions_total{from="backup",to="master"} 1.0' in text
    assert "havip_effective_priority 101.0" in text
    assert 'havip_check_ok{check="milvus"} 0.0' in text
    assert "havip_effective_priority 102.0" in scrape(host, port)    # read afresh at each scrape
    with socket.create_connection((host, port), timeout=1):
        pass
    metrics.close()
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1)


def test_a_loop_that_does_not_answer_still_scrapes(metrics):
    def refresh():
        raise TimeoutError("loop busy")

    host, port = metrics.serve("127.0.0.1:0", refresh=refresh)
    text = scrape(host, port)
    assert "havip_status_errors_total 1.0" in text
    assert 'havip_state{havip_state="init"} 1.0' in text


def test_ipv6_loopback():
    require(socket.has_ipv6, "needs IPv6 (::1)")
    m = Metrics()
    try:
        host, port = m.serve("[::1]:0")
        assert host == "::1"
        assert "havip_paused" in scrape("[::1]", port)
    finally:
        m.close()


@pytest.mark.parametrize("listen", ["0.0.0.0:9405", "192.0.2.1:9405", "[::]:9405"])
def test_non_loopback_is_refused(metrics, listen):
    with pytest.raises(ConfigError, match=re.escape(f"metrics.listen: {listen}: must be a loopback address")):
        metrics.serve(listen)


def test_non_loopback_allowed_explicitly(metrics):
    host, port = metrics.serve("0.0.0.0:0", allow_remote=True)
    assert "havip_paused" in scrape("127.0.0.1", port)


def test_port_in_use_is_one_line(metrics):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with pytest.raises(AdapterError, match=f"^metrics.listen: 127.0.0.1:{port}: cannot listen: "
                                               "Address already in use$"):
            metrics.serve(f"127.0.0.1:{port}")
    finally:
        busy.close()


def test_parse_listen():
    assert parse_listen("127.0.0.1:9405") == ("127.0.0.1", 9405)
    assert parse_listen("[::1]:9405") == ("::1", 9405)
    assert parse_listen("localhost:1") == ("localhost", 1)
    with pytest.raises(ConfigError, match="must be host:port"):
        parse_listen("9405")


def test_held_connections_cannot_take_the_daemons_threads_and_descriptors(metrics):
    # Any local user may connect to the port: each held connection took a thread and a
    # descriptor (1,000 of them: EMFILE for the loop's own socket()/pipe()/open()).
    import threading
    import time

    from havip.metrics import MAX_SCRAPES

    host, port = metrics.serve("127.0.0.1:0")
    before = threading.active_count()
    held = []
    try:
        for _ in range(60):
            held.append(socket.create_connection((host, port), timeout=2))
        deadline = time.monotonic() + 5
        while metrics.refused < 60 - MAX_SCRAPES and time.monotonic() < deadline:
            time.sleep(0.02)
        assert metrics.refused == 60 - MAX_SCRAPES
        assert threading.active_count() - before <= MAX_SCRAPES
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:       # the slots come back as the held ones close
        try:
            assert "havip_paused" in scrape(host, port)
            break
        except OSError:
            time.sleep(0.05)
    else:
        raise AssertionError("no scrape after the held connections closed")
