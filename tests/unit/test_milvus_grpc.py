"""The daemon's own CheckHealth client (havip.checks.milvus_grpc): wire-compatible with
Milvus' messages (pymilvus' generated ones, test-only) and with a real gRPC server
(grpcio's, test-only), every answer a sentence, and the daemon never loading pymilvus,
pandas, numpy or grpcio.

The gRPC server here listens on a unix socket in the test's temporary directory: no
network at all. The real Milvus (milvus-lite in a lab container) is asked in
tests/integration/test_docker_milvus.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures

import grpc
import pytest

from havip.checks.milvus_grpc import METHOD, check_health, messages
from havip.checks.probes import MilvusProbe
from tests.conftest import REPO

Request, Response = messages()


def test_our_messages_read_and_write_milvus_own_encoding():
    from pymilvus.grpc_gen import common_pb2, milvus_pb2

    theirs = milvus_pb2.CheckHealthResponse(
        status=common_pb2.Status(error_code=common_pb2.UnexpectedError, reason="rootcoord is down", code=65535,
                                 retriable=True, detail="d"),
        isHealthy=False, reasons=["a", "b"], quota_states=[milvus_pb2.DenyToWrite, milvus_pb2.DenyToRead])
    ours = Response.FromString(theirs.SerializeToString())
    assert (ours.status.error_code, ours.status.reason, ours.status.code) == (common_pb2.UnexpectedError, "rootcoord is down", 65535)
    assert (ours.isHealthy, list(ours.reasons)) == (False, ["a", "b"])
    healthy = Response.FromString(milvus_pb2.CheckHealthResponse(status=common_pb2.Status(), isHealthy=True)
                                  .SerializeToString())
    assert healthy.isHealthy and not healthy.status.code
    assert Request().SerializeToString() == milvus_pb2.CheckHealthRequest().SerializeToString() == b""
    back = milvus_pb2.CheckHealthResponse.FromString(ours.SerializeToString())   # unknown fields kept
    assert list(back.quota_states) == [milvus_pb2.DenyToWrite, milvus_pb2.DenyToRead]


class FakeMilvus:
    """A gRPC server on a unix socket that answers CheckHealth with `self.reply` (a
    Response, or "hang" to never answer within the deadline)."""

    def __init__(self, path):
        self.target = f"unix:{path}"
        self.reply: Response | str = Response(isHealthy=True)
        self.release = threading.Event()
        self.calls = 0
        handler = grpc.method_handlers_generic_handler("milvus.proto.milvus.MilvusService", {
            "CheckHealth": grpc.unary_unary_rpc_method_handler(
                self._check, request_deserializer=Request.FromString, response_serializer=Response.SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
        self.server.add_insecure_port(self.target)
        self.server.start()

    def _check(self, request, context):
        self.calls += 1
        if self.reply == "hang":
            self.release.wait(10)
            return Response(isHealthy=True)
        return self.reply

    def stop(self):
        self.release.set()
        self.server.stop(0).wait(5)


@pytest.fixture
def fake(tmp_path):
    srv = FakeMilvus(tmp_path / "milvus.sock")
    yield srv
    srv.stop()


def test_answers_become_sentences(fake):
    assert METHOD == "/milvus.proto.milvus.MilvusService/CheckHealth"
    assert check_health(fake.target, 2) == (True, f"Milvus at {fake.target} is healthy")
    fake.reply = Response(isHealthy=False, reasons=["querynode 3 is down", "quota"])
    assert check_health(fake.target, 2) == (False, "Milvus reports unhealthy: querynode 3 is down; quota")
    fake.reply = Response(isHealthy=False)
    assert check_health(fake.target, 2) == (False, "Milvus reports unhealthy: no reason given")
    fake.reply = Response(isHealthy=True)
    fake.reply.status.error_code, fake.reply.status.reason = 1, "not ready"
    assert check_health(fake.target, 2) == (False, "Milvus answered CheckHealth with error 1: not ready")
    fake.reply = Response()
    fake.reply.status.code = 2
    assert check_health(fake.target, 2) == (False, "Milvus answered CheckHealth with error 2: no reason given")


def test_a_hung_server_fails_by_the_deadline_and_the_next_check_connects_afresh(fake):
    assert check_health(fake.target, 2)[0]
    fake.reply = "hang"
    t0 = time.monotonic()
    assert check_health(fake.target, 0.3) == (False, "Milvus did not answer CheckHealth within 0.3s")
    assert 0.3 <= time.monotonic() - t0 < 1.0
    fake.release.set()
    fake.reply = Response(isHealthy=True)
    assert check_health(fake.target, 2)[0]


def test_a_server_that_is_not_milvus(fake, tmp_path):
    other = grpc.server(futures.ThreadPoolExecutor(max_workers=1))      # no MilvusService
    other.add_insecure_port(f"unix:{tmp_path}/other.sock")
    other.start()
    try:
        assert check_health(f"unix:{tmp_path}/other.sock", 2) == (
            False, "Milvus CheckHealth failed with UNIMPLEMENTED: Method not found!")
    finally:
        other.stop(0).wait(5)

    def serve_once(answer: bytes):
        srv = socket.socket(socket.AF_UNIX)
        path = tmp_path / f"raw{len(answer)}.sock"
        srv.bind(str(path))
        srv.listen(1)
        def run():
            conn, _ = srv.accept()
            conn.recv(65536)
            if answer:
                conn.sendall(answer)
            conn.close()
            srv.close()
        threading.Thread(target=run, daemon=True).start()
        return f"unix:{path}"
    target = serve_once(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert check_health(target, 2) == (False, f"Milvus at {target} answered HTTP/1, not gRPC (is it the metrics port?)")
    target = serve_once(b"\x00\x00\x04\x07\x00\x00\x00\x00\x01" + bytes(4))   # a PING on stream 1
    ok, reason = check_health(target, 2)
    assert not ok and reason.startswith(f"Milvus at {target} did not speak gRPC (HTTP/2: "), reason
    target = serve_once(b"")
    assert check_health(target, 2) == (False, f"Milvus at {target} closed the connection before answering")


def test_nothing_listening_and_a_malformed_target(tmp_path):
    target = f"unix:{tmp_path}/none.sock"
    assert check_health(target, 0.5) == (False, f"Milvus at {target} is unreachable: No such file or directory")
    r = MilvusProbe(target, 0.5).check()
    assert (r.name, r.ok, r.reason) == ("grpc", False, f"Milvus at {target} is unreachable: No such file or directory")
    assert check_health("nohost", 0.5) == (False, "Milvus at nohost is unreachable: 'nohost' is not host:port")


def test_probe_checks_with_a_connection_each(fake):
    probe = MilvusProbe(fake.target, 1.0)
    for _ in range(3):
        r = probe.check()
        assert (r.name, r.ok, r.reason) == ("grpc", True, f"Milvus at {fake.target} is healthy")
    assert fake.calls == 3


# What `havip run` imports and runs, with pymilvus, pandas and numpy made impossible to
# import: the daemon must work without them installed, and never load them.
DAEMON_WITHOUT_PYMILVUS = r"""
import importlib, json, pkgutil, sys, time
FORBIDDEN = ("pymilvus", "pandas", "numpy")
tried = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            tried.append(name)
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())

import havip, havip.cli
skipped = []
for m in pkgutil.walk_packages(havip.__path__, "havip."):
    if m.name.startswith("havip.lab"):       # the lab drives pymilvus clients: not the daemon
        skipped.append(m.name)
        continue
    importlib.import_module(m.name)

from havip import config
from havip.daemon.build import _add_milvus
from havip.daemon.loop import Adapters
A = json.loads(sys.argv[1])
cfg = config.load(A["conf"])    # grpc: a unix socket (no network), which the schema does not take
cfg = cfg.model_copy(update={"milvus": cfg.milvus.model_copy(update={"grpc": A["grpc"]})})
ad = Adapters(make_socket=None, vips=None, announcer=None, link=None)
_add_milvus(cfg, ad)
results = [p() for role in ("backup", "master") for p in ad.make_runner(lambda *a: None).probes_for_role(role)]
ready = ad.runtime.wait_ready(ad.milvus_probe, 0.5)      # the takeover's wait for Milvus
print(json.dumps({"tried": tried, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN),
                  "grpc": "grpc" in sys.modules, "h2": "h2" in sys.modules, "results": [r.reason for r in results], "ready": ready.reason,
                  "skipped": skipped}))
"""


def test_the_daemon_runs_every_check_without_pymilvus_pandas_or_numpy(tmp_path):
    """Regression: MilvusProbe imported pymilvus.grpc_gen, whose package __init__ loads
    pandas and numpy (daemon RSS 69 -> 176 MB, ~0.5 s on the takeover path)."""
    (tmp_path / "data").mkdir()
    conf = tmp_path / "havip.yaml"
    conf.write_text(textwrap.dedent(f"""\
        interface: eth0
        virtual_router_id: 51
        priority: 110
        virtual_ipaddresses: [198.18.0.100/24]
        milvus:
          container: milvus
          docker: unix://{tmp_path}/no-docker.sock
          data_path: {tmp_path}/data
          check_timeout: 0.3
        """))
    proc = subprocess.run([sys.executable, "-c", DAEMON_WITHOUT_PYMILVUS, json.dumps({"conf": str(conf), "grpc": f"unix:{tmp_path}/no-milvus.sock"})],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (res["tried"], res["loaded"]) == ([], [])
    assert res["h2"], "the Milvus probe ran (h2 loaded)"
    assert not res["grpc"], "grpcio is the lab's and the tests', not the daemon's"
    assert any(r.startswith("Milvus at unix:") for r in res["results"]), res["results"]
    assert any("storage lease" in r for r in res["results"]), res["results"]
    assert res["ready"].startswith("Milvus did not become healthy within 0.5s") or "container" in res["ready"], res
    assert all(name.startswith("havip.lab") for name in res["skipped"])
