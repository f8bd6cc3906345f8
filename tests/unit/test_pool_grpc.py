"""The pool's own protobuf wire code, against messages serialized by pymilvus (tests only)."""

from __future__ import annotations

import pytest

from havip.pool import wire
from havip.pool.accesslog import Counts, parse_line
from havip.pool.probe import GrpcCheck


def _pb():
    from pymilvus.grpc_gen import common_pb2, milvus_pb2

    return common_pb2, milvus_pb2


def test_check_health_replies_decode_as_pymilvus_encodes_them():
    common, milvus = _pb()
    raw = milvus.CheckHealthResponse(status=common.Status(code=-3, reason="quota", error_code=5), isHealthy=False,
                                     reasons=["querynode down", "x"], quota_states=[2]).SerializeToString()
    h = wire.decode_health(raw)
    assert (h.healthy, h.code, h.error_code, h.reason, h.reasons) == (False, -3, 5, "quota", ("querynode down", "x"))
    assert wire.decode_health(milvus.CheckHealthResponse(isHealthy=True).SerializeToString()).healthy


def test_load_state_request_and_reply():
    common, milvus = _pb()
    req = milvus.GetLoadStateRequest.FromString(wire.encode_load_state_request("havip_pool", "db1"))
    assert (req.collection_name, req.db_name) == ("havip_pool", "db1")
    raw = milvus.GetLoadStateResponse(state=common.LoadState.LoadStateLoading).SerializeToString()
    assert wire.decode_load_state(raw)[0] == 2


def test_garbage_is_a_wire_error_not_a_crash():
    for junk in (b"\xff", b"\x0a\x05ab", b"\x0f", b"\x00\x01"):
        with pytest.raises(wire.WireError):
            wire.decode_health(junk)


def test_verdicts():
    common, milvus = _pb()
    chk = GrpcCheck("198.18.0.31:19530", "milvus", 0.5)
    assert chk._verdict(milvus.CheckHealthResponse(isHealthy=True).SerializeToString()) == (
        True, "198.18.0.31:19530 is healthy")
    assert chk._verdict(milvus.CheckHealthResponse(isHealthy=False, reasons=["a", "b"]).SerializeToString()) == (
        False, "198.18.0.31:19530 reports unhealthy: a; b")
    assert chk._verdict(milvus.CheckHealthResponse(status=common.Status(code=2, reason="r")).SerializeToString()) == (
        False, "198.18.0.31:19530 answered CheckHealth with error 2: r")
    h = GrpcCheck("198.18.0.31:19530", "grpc-health", 0.5)
    assert h._verdict(b"\x08\x01")[0] and not h._verdict(b"\x08\x02")[0]


def test_access_log_lines():
    c = Counts()
    parse_line("1.0 /milvus.proto.milvus.MilvusService/Search 10.0.0.1:1, 10.0.0.2:1 200 0 1.001", c)
    parse_line("1.0 /milvus.proto.milvus.MilvusService/Search 10.0.0.1:1 : 10.0.0.3:1 200 0 1.001", c)
    parse_line("garbage", c)
    assert c.served == {"10.0.0.2:1": 1, "10.0.0.3:1": 1} and c.retried == {"10.0.0.1:1": 2} and c.bad_lines == 1
