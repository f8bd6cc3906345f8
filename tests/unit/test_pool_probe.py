"""The read pool's member check (havip.pool.probe.GrpcCheck) on the daemon's gRPC client,
against a real gRPC server (grpcio's, on a unix socket: no network): every answer a
sentence that names the member, all calls of a check on one connection and within one
deadline. The messages' wire compatibility is tests/unit/test_milvus_grpc.py's."""

from __future__ import annotations

import socket
import time

import pytest
from grpc_health.v1 import health_pb2

from havip.checks.milvus_grpc import messages
from havip.pool.probe import GrpcCheck
from tests.grpc_fakes import FakeMilvus

M = messages()


@pytest.fixture
def fake(tmp_path):
    srv = FakeMilvus(tmp_path / "milvus.sock")
    yield srv
    srv.stop()


def _loaded(state: int = 3, **status):
    return M["GetLoadStateResponse"](state=state, status=M["Status"](**status))


def test_milvus_kind(fake):
    chk = GrpcCheck(fake.target, "milvus", 2)
    r = chk()
    assert (r.ok, r.reason) == (True, f"{fake.target} is healthy") and 0 < r.latency < 2
    fake.reply = M["CheckHealthResponse"](isHealthy=False, reasons=["a", "b"])
    assert chk().reason == f"{fake.target} reports unhealthy: a; b"
    fake.reply = M["CheckHealthResponse"](status=M["Status"](code=2, reason="r"))
    assert (chk().ok, chk().reason) == (False, f"{fake.target} answered CheckHealth with error 2: r")


def test_collections_must_be_loaded(fake):
    chk = GrpcCheck(fake.target, "milvus", 2, collections=("a", "b"), db="db1")
    fake.load_states = {"a": _loaded(), "b": _loaded()}
    assert (chk().ok, chk().reason) == (True, f"{fake.target} is healthy and has a, b loaded")
    assert fake.load_requests[-2:] == [("a", "db1"), ("b", "db1")]
    fake.load_states["b"] = _loaded(2)
    assert (chk().ok, chk().reason) == (False, f"{fake.target} is healthy but collection b is still loading")
    fake.load_states["b"] = _loaded(1)
    assert chk().reason == f"{fake.target} is healthy but collection b is not loaded"
    del fake.load_states["b"]
    assert chk().reason == f"{fake.target} is healthy but collection b does not exist"
    fake.load_states["b"] = _loaded(9)
    assert chk().reason == f"{fake.target} is healthy but collection b is in load state 9"
    fake.load_states["b"] = _loaded(3, code=100, reason="collection not found[collection=b]")
    assert chk().reason == f"{fake.target} answered GetLoadState(b) with error 100: collection not found[collection=b]"
    fake.reply = M["CheckHealthResponse"](isHealthy=False)
    n = len(fake.load_requests)
    assert chk().reason == f"{fake.target} reports unhealthy: no reason given"
    assert len(fake.load_requests) == n, "an unhealthy node is not asked about its collections"


def test_grpc_health_kind(fake):
    chk = GrpcCheck(fake.target, "grpc-health", 2)
    fake.health.set("", health_pb2.HealthCheckResponse.SERVING)
    assert (chk().ok, chk().reason) == (True, f"{fake.target} is serving (grpc.health.v1)")
    fake.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert (chk().ok, chk().reason) == (False, f"{fake.target} reports NOT_SERVING (grpc.health.v1), not SERVING")


def test_grpc_health_on_a_server_without_it(tmp_path):
    from concurrent import futures

    import grpc

    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    srv.add_insecure_port(f"unix:{tmp_path}/bare.sock")
    srv.start()
    try:
        r = GrpcCheck(f"unix:{tmp_path}/bare.sock", "grpc-health", 2)()
        assert (r.ok, r.reason) == (
            False, f"unix:{tmp_path}/bare.sock does not implement /grpc.health.v1.Health/Check: Method not found!")
    finally:
        srv.stop(0).wait(5)


def test_a_hung_member_fails_by_its_deadline_even_between_calls(fake):
    chk = GrpcCheck(fake.target, "milvus", 0.3)
    fake.reply = "hang"
    t0 = time.monotonic()
    r = chk()
    assert (r.ok, r.reason) == (
        False, f"{fake.target} did not answer within 0.3s (connected, but no answer to CheckHealth)")
    assert 0.3 <= time.monotonic() - t0 < 1.0
    fake.release.set()
    fake.reply = M["CheckHealthResponse"](isHealthy=True)
    assert chk().ok, "the next check connects afresh"


def test_one_deadline_for_all_the_calls_of_a_check(fake):
    """A member that answers CheckHealth but hangs on GetLoadState fails by the check's
    own deadline, with the call it did not answer named."""
    fake.load_states = {"a": _loaded(), "b": "hang"}
    t0 = time.monotonic()
    r = GrpcCheck(fake.target, "milvus", 0.3, collections=("a", "b"))()
    assert (r.ok, r.reason) == (
        False, f"{fake.target} did not answer within 0.3s (connected, but no answer to GetLoadState)")
    assert 0.3 <= time.monotonic() - t0 < 1.0


def test_nothing_listening(tmp_path):
    missing = f"unix:{tmp_path}/none.sock"
    assert GrpcCheck(missing, "milvus", 0.5)().reason == f"{missing} is unreachable: No such file or directory"
    dead = socket.socket(socket.AF_UNIX)            # bound, never listening: ECONNREFUSED
    dead.bind(str(tmp_path / "dead.sock"))
    try:
        r = GrpcCheck(f"unix:{tmp_path}/dead.sock", "milvus", 0.5)()
        assert (r.ok, r.reason) == (False, f"unix:{tmp_path}/dead.sock refused the connection (nothing listening)")
    finally:
        dead.close()
    assert GrpcCheck("nohost", "milvus", 0.5)().reason == "nohost is unreachable: 'nohost' is not host:port"


def test_one_connection_per_check(fake, tmp_path):
    """CheckHealth and each GetLoadState share the check's connection (counted by a unix
    socket relay in front of the server)."""
    import threading

    front = socket.socket(socket.AF_UNIX)
    front.bind(str(tmp_path / "front.sock"))
    front.listen(8)
    accepted = []

    def relay():
        while True:
            try:
                c, _ = front.accept()
            except OSError:
                return
            accepted.append(c)
            b = socket.socket(socket.AF_UNIX)
            b.connect(fake.target[len("unix:"):])
            for src, dst in ((c, b), (b, c)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    threading.Thread(target=relay, daemon=True).start()
    fake.load_states = {"a": _loaded(), "b": _loaded()}
    chk = GrpcCheck(f"unix:{tmp_path}/front.sock", "milvus", 2, collections=("a", "b"))
    try:
        assert all(chk().ok for _ in range(3))
        assert len(accepted) == 3 and len(fake.load_requests) == 6
    finally:
        front.close()
        for c in accepted:
            c.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
