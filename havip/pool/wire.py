"""The smallest protobuf wire code the pool needs: CheckHealth and GetLoadState.

The pool daemon must not import pymilvus (it pulls pandas and numpy), so the one reply
it reads is decoded here by field number (milvus.proto.milvus.CheckHealthResponse:
1 status, 2 isHealthy, 3 reasons; milvus.proto.common.Status: 1 error_code, 2 reason,
3 code), and so are GetLoadState's request (2 collection_name, 4 db_name) and reply
(1 status, 2 state). Unknown fields are skipped, as protobuf does. tests/unit/test_pool_grpc.py
checks this against messages serialized by pymilvus' own generated code.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class WireError(ValueError):
    """The bytes are not a valid protobuf message."""


@dataclass(frozen=True)
class Health:
    healthy: bool = False
    error_code: int = 0
    code: int = 0
    reason: str = ""
    reasons: tuple[str, ...] = field(default_factory=tuple)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise WireError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(number, wire type, value) of each field: an int for varints, bytes otherwise."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wtype = key >> 3, key & 7
        if wtype == 0:
            value, i = _varint(buf, i)
        elif wtype == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise WireError("truncated length-delimited field")
            value, i = buf[i:i + n], i + n
        elif wtype in (1, 5):
            n = 8 if wtype == 1 else 4
            if i + n > len(buf):
                raise WireError("truncated fixed field")
            value, i = int.from_bytes(buf[i:i + n], "little"), i + n
        else:
            raise WireError(f"unsupported wire type {wtype}")
        if number == 0:
            raise WireError("field number 0")
        out.append((number, wtype, value))
    return out


def _text(value: int | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def _status(buf: bytes) -> tuple[int, int, str]:
    """(error_code, code, reason) of a milvus.proto.common.Status."""
    error_code, code, reason = 0, 0, ""
    for n, t, v in fields(buf):
        if n == 1 and t == 0:
            error_code = v
        elif n == 2 and t == 2:
            reason = _text(v)
        elif n == 3 and t == 0:
            code = v if v < 2**63 else v - 2**64      # int32 negatives are 10-byte varints
    return error_code, code, reason


def encode_load_state_request(collection: str, db: str = "") -> bytes:
    """GetLoadStateRequest{collection_name=2, db_name=4}."""
    out = b""
    for number, text in ((2, collection), (4, db)):
        if text:
            data = text.encode()
            out += _key(number, 2) + _encode_varint(len(data)) + data
    return out


def _key(number: int, wtype: int) -> bytes:
    return _encode_varint(number << 3 | wtype)


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


LOAD_STATES = {0: "does not exist", 1: "is not loaded", 2: "is still loading", 3: "is loaded"}
LOADED = 3


def decode_load_state(buf: bytes) -> tuple[int, int, int, str]:
    """(state, error_code, code, reason) of a GetLoadStateResponse."""
    state, error_code, code, reason = 0, 0, 0, ""
    for number, wtype, value in fields(buf):
        if number == 1 and wtype == 2:
            error_code, code, reason = _status(value)
        elif number == 2 and wtype == 0:
            state = value
    return state, error_code, code, reason


def decode_health(buf: bytes) -> Health:
    """A CheckHealthResponse; raises WireError on bytes that are not one."""
    healthy, error_code, code, reason, reasons = False, 0, 0, "", []
    for number, wtype, value in fields(buf):
        if number == 1 and wtype == 2:
            error_code, code, reason = _status(value)
        elif number == 2 and wtype == 0:
            healthy = bool(value)
        elif number == 3 and wtype == 2:
            reasons.append(_text(value))
    return Health(healthy, error_code, code, reason, tuple(reasons))
