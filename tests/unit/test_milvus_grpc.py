"""The gRPC client of both daemons (havip.checks.milvus_grpc): wire-compatible with
Milvus' messages (pymilvus' generated ones, test-only) and grpc.health.v1's
(grpcio-health-checking's), working against a real gRPC server (grpcio's, test-only),
every answer a sentence, and the daemon never loading pymilvus, pandas, numpy or grpcio.

The gRPC server here listens on a unix socket in the test's temporary directory: no
network at all. The real Milvus (milvus-lite in a lab container) is asked in
tests/integration/test_docker_milvus.py; the read pool's checks against it in
tests/integration/test_read_pool.py.
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
from google.protobuf.descriptor import FieldDescriptor

from havip.checks import milvus_grpc as g
from havip.checks.milvus_grpc import METHOD, check_health, messages
from havip.checks.probes import MilvusProbe
from tests.conftest import REPO
from tests.grpc_fakes import FakeMilvus

M = messages()
Request, Response = M["CheckHealthRequest"], M["CheckHealthResponse"]


def _theirs():
    from grpc_health.v1 import health_pb2
    from pymilvus.grpc_gen import common_pb2, milvus_pb2

    return {"Status": common_pb2.Status, "CheckHealthRequest": milvus_pb2.CheckHealthRequest,
            "CheckHealthResponse": milvus_pb2.CheckHealthResponse,
            "GetLoadStateRequest": milvus_pb2.GetLoadStateRequest,
            "GetLoadStateResponse": milvus_pb2.GetLoadStateResponse,
            "HealthCheckRequest": health_pb2.HealthCheckRequest, "HealthCheckResponse": health_pb2.HealthCheckResponse}


# The wire type of a field (protobuf's encoding.md): what must agree for bytes to be read alike.
_VARINT = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM, FieldDescriptor.TYPE_BOOL}
_LEN = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE}


def _wire(f) -> str:
    return "varint" if f.type in _VARINT else "len" if f.type in _LEN else f"type {f.type}"


def test_every_declared_field_is_the_generated_codes_field():
    """Each field we declare has the number, wire type, repetition and (for enums) values
    of Milvus' and gRPC's own generated messages; the fields we leave out are only ones
    that protobuf skips as unknown."""
    theirs = _theirs()
    assert set(theirs) == set(M)
    for name, ours in M.items():
        their = theirs[name].DESCRIPTOR
        for f in ours.DESCRIPTOR.fields:
            t = their.fields_by_number[f.number]
            assert (f.name, _wire(f), f.is_repeated) == (t.name, _wire(t), t.is_repeated), (name, f.name)
            if f.enum_type is not None:
                assert {v.number: v.name for v in f.enum_type.values} == {
                    v.number: v.name for v in t.enum_type.values}, (name, f.name)
    left_out = {(n, f.name) for n, m in M.items() for f in theirs[n].DESCRIPTOR.fields
                if f.number not in m.DESCRIPTOR.fields_by_number}
    assert left_out == {("Status", "retriable"), ("Status", "detail"), ("Status", "extra_info"),
                        ("CheckHealthResponse", "quota_states"), ("GetLoadStateRequest", "base")}


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
    negative = Response.FromString(milvus_pb2.CheckHealthResponse(status=common_pb2.Status(code=-3, reason="quota"))
                                   .SerializeToString())      # an int32 below 0 is a 10-byte varint
    assert g.verdict(negative) == (False, "answered CheckHealth with error -3: quota")


def test_load_state_request_and_reply_as_milvus_encodes_them():
    from pymilvus.grpc_gen import common_pb2, milvus_pb2

    ours = M["GetLoadStateRequest"](collection_name="havip_pool", partition_names=["p1", "p2"], db_name="db1")
    req = milvus_pb2.GetLoadStateRequest.FromString(ours.SerializeToString())
    assert (req.collection_name, list(req.partition_names), req.db_name, req.HasField("base")) == (
        "havip_pool", ["p1", "p2"], "db1", False)
    theirs = milvus_pb2.GetLoadStateRequest(base=common_pb2.MsgBase(msgID=7), collection_name="c").SerializeToString()
    assert M["GetLoadStateRequest"].FromString(theirs).collection_name == "c"        # base skipped
    for state in (common_pb2.LoadStateNotExist, common_pb2.LoadStateNotLoad, common_pb2.LoadStateLoading,
                  common_pb2.LoadStateLoaded):
        reply = M["GetLoadStateResponse"].FromString(milvus_pb2.GetLoadStateResponse(
            status=common_pb2.Status(code=5 if state == 0 else 0, reason="r"), state=state).SerializeToString())
        assert (reply.state, reply.status.code, g.enum_name(reply, "state")) == (
            state, 5 if state == 0 else 0, common_pb2.LoadState.Name(state))
    assert g.LOADED == common_pb2.LoadStateLoaded


def test_health_v1_messages_as_grpc_encodes_them():
    from grpc_health.v1 import health_pb2

    assert M["HealthCheckRequest"](service="milvus").SerializeToString() == \
        health_pb2.HealthCheckRequest(service="milvus").SerializeToString()
    for status in (0, 1, 2, 3):
        reply = M["HealthCheckResponse"].FromString(health_pb2.HealthCheckResponse(status=status).SerializeToString())
        assert g.enum_name(reply, "status") == health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    assert g.SERVING == health_pb2.HealthCheckResponse.SERVING
    future = M["HealthCheckResponse"].FromString(b"\x08\x07")           # a status this module does not know
    assert g.enum_name(future, "status") == "7"


@pytest.fixture
def fake(tmp_path):
    srv = FakeMilvus(tmp_path / "milvus.sock")
    yield srv
    srv.stop()


def test_answers_become_sentences(fake):
    assert METHOD == "/milvus.proto.milvus.MilvusService/CheckHealth"
    assert check_health(fake.target, 2) == (True, f"Milvus at {fake.target} is healthy")
    fake.reply = Response(isHealthy=False, reasons=["querynode 3 is down", "quota"])
    at = f"Milvus at {fake.target}"
    assert check_health(fake.target, 2) == (False, f"{at} reports unhealthy: querynode 3 is down; quota")
    fake.reply = Response(isHealthy=False)
    assert check_health(fake.target, 2) == (False, f"{at} reports unhealthy: no reason given")
    fake.reply = Response(isHealthy=True)
    fake.reply.status.error_code, fake.reply.status.reason = 1, "not ready"
    assert check_health(fake.target, 2) == (False, f"{at} answered CheckHealth with error 1: not ready")
    fake.reply = Response()
    fake.reply.status.code = 2
    assert check_health(fake.target, 2) == (False, f"{at} answered CheckHealth with error 2: no reason given")
    fake.reply = b"\x0a\x05ab"                      # a status field longer than the message
    assert check_health(fake.target, 2) == (
        False, f"{at} answered CheckHealth with bytes that are not a CheckHealthResponse")


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
            False, f"Milvus at unix:{tmp_path}/other.sock does not implement {METHOD}: Method not found!")
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
FORBIDDEN = ("pymilvus", "pandas", "numpy", "grpc")
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
