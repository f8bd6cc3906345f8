"""gRPC unary calls to Milvus, without pymilvus and without grpcio: the one client of
both daemons (`havip run`'s CheckHealth probe, `havip pool run`'s member checks).

A daemon that asks a question or two every half second needs neither library:
- pymilvus' generated stubs live in a package whose `__init__` loads pandas and numpy
  (the daemon went from 69 to 176 MB of RSS, and half a second on the takeover path);
- grpcio's C core alone is 16 MB of resident library pages (measured: the daemon with
  every check loaded was 100 MB with grpcio, 82 MB with this module).

So the calls are made by hand, as gRPC defines them over HTTP/2 (PROTOCOL-HTTP2.md in
grpc/grpc): one POST per call on a connection opened for the check, with `h2`
(python-hyper's HTTP/2 state machine, pure Python) doing the framing, flow control and
HPACK, and protobuf encoding and decoding the messages, declared here as a descriptor
built at runtime (`messages()`):

    service milvus.proto.milvus.MilvusService {
      rpc CheckHealth(CheckHealthRequest) returns (CheckHealthResponse);
      rpc GetLoadState(GetLoadStateRequest) returns (GetLoadStateResponse);
    }
    message CheckHealthRequest {}
    message CheckHealthResponse {
      common.Status status = 1; bool isHealthy = 2; repeated string reasons = 3;
      // quota_states = 4 (repeated enum) is not declared: protobuf keeps it as unknown
    }
    message GetLoadStateRequest {
      // base = 1 (common.MsgBase) is not declared: Milvus fills in a missing one
      string collection_name = 2; repeated string partition_names = 3; string db_name = 4;
    }
    message GetLoadStateResponse { common.Status status = 1; common.LoadState state = 2; }
    enum common.LoadState { NotExist = 0; NotLoad = 1; Loading = 2; Loaded = 3; }
    message common.Status { int32 error_code = 1; string reason = 2; int32 code = 3; ... }

    service grpc.health.v1.Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
    message HealthCheckRequest { string service = 1; }
    message HealthCheckResponse { ServingStatus status = 1; }
    enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }

The field numbers are Milvus' (milvus-proto: milvus.proto, common.proto) and gRPC's
(grpc/src/proto/grpc/health/v1/health.proto); tests/unit/test_milvus_grpc.py checks them
against pymilvus' and grpcio-health-checking's generated code. `error_code` is an enum in
Milvus, a varint on the wire like an int32. Unknown fields are skipped and missing ones
read as defaults, so a newer Milvus with more fields answers the same.

A fresh connection per check costs one TCP handshake (local, ~0.1 ms) and has no state to
go stale: a long-lived gRPC channel that once saw a refused connection backs off
reconnecting for up to minutes, which is exactly when a takeover needs an answer.

The API: `check_health(target, timeout) -> (healthy, reason)` for the daemon; `Connection`
(one connection, several calls within one deadline) and `verdict` for the pool. `target`
is host:port, [v6]:port or unix:/path. A failed call raises `CallFailed`, whose str() is
a sentence without its subject ("refused the connection (nothing listening)"): each
caller names the server its own way.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from havip.fmt import fmt_seconds


@dataclass(frozen=True, slots=True)
class Rpc:
    """A unary method: its HTTP/2 path and its messages' names in `messages()`."""

    path: str
    request: str
    response: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


CHECK_HEALTH = Rpc("/milvus.proto.milvus.MilvusService/CheckHealth", "CheckHealthRequest", "CheckHealthResponse")
GET_LOAD_STATE = Rpc("/milvus.proto.milvus.MilvusService/GetLoadState", "GetLoadStateRequest", "GetLoadStateResponse")
HEALTH_CHECK = Rpc("/grpc.health.v1.Health/Check", "HealthCheckRequest", "HealthCheckResponse")
METHOD = CHECK_HEALTH.path
LOADED = 3                  # common.LoadState.LoadStateLoaded
SERVING = 1                 # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING

_PACKAGE = "havip.milvus_grpc"     # our own package name: never clashes with pymilvus' in one process
# gRPC status codes (grpc/doc/statuscodes.md) by number, for the sentences.
STATUS_NAMES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
                6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
                10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
                15: "DATA_LOSS", 16: "UNAUTHENTICATED"}

_T = descriptor_pb2.FieldDescriptorProto
_ONE, _MANY = _T.LABEL_OPTIONAL, _T.LABEL_REPEATED
# name: fields (name, number, type, label, type name); a type name is a message or enum below.
_MESSAGES = {
    "Status": (("error_code", 1, _T.TYPE_INT32, _ONE, ""), ("reason", 2, _T.TYPE_STRING, _ONE, ""),
               ("code", 3, _T.TYPE_INT32, _ONE, "")),
    "CheckHealthRequest": (),
    "CheckHealthResponse": (("status", 1, _T.TYPE_MESSAGE, _ONE, "Status"), ("isHealthy", 2, _T.TYPE_BOOL, _ONE, ""),
                            ("reasons", 3, _T.TYPE_STRING, _MANY, "")),
    "GetLoadStateRequest": (("collection_name", 2, _T.TYPE_STRING, _ONE, ""),
                            ("partition_names", 3, _T.TYPE_STRING, _MANY, ""),
                            ("db_name", 4, _T.TYPE_STRING, _ONE, "")),
    "GetLoadStateResponse": (("status", 1, _T.TYPE_MESSAGE, _ONE, "Status"),
                             ("state", 2, _T.TYPE_ENUM, _ONE, "LoadState")),
    "HealthCheckRequest": (("service", 1, _T.TYPE_STRING, _ONE, ""),),
    "HealthCheckResponse": (("status", 1, _T.TYPE_ENUM, _ONE, "ServingStatus"),),
}
_ENUMS = {
    "LoadState": ("LoadStateNotExist", "LoadStateNotLoad", "LoadStateLoading", "LoadStateLoaded"),
    "ServingStatus": ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"),
}


@lru_cache(maxsize=1)
def messages() -> MappingProxyType:
    """The message classes by name (`messages()["CheckHealthResponse"]`), built once per process."""
    fd = descriptor_pb2.FileDescriptorProto(name="havip/milvus_grpc.proto", package=_PACKAGE, syntax="proto3")
    for name, values in _ENUMS.items():
        e = fd.enum_type.add(name=name)
        for number, value in enumerate(values):
            e.value.add(name=value, number=number)
    for name, fields in _MESSAGES.items():
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return MappingProxyType({n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{n}"))
                             for n in _MESSAGES})


def enum_name(message, field: str) -> str:
    """The name of an enum field's value (its number if this module does not know it)."""
    value = getattr(message, field)
    known = message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number.get(value)
    return known.name if known else str(value)


def verdict(reply) -> tuple[bool, str]:
    """(healthy, sentence without its subject) for a CheckHealthResponse."""
    if reply.status.code or reply.status.error_code:
        code = reply.status.code or reply.status.error_code
        return False, f"answered CheckHealth with error {code}: {reply.status.reason or 'no reason given'}"
    if not reply.isHealthy:
        return False, f"reports unhealthy: {'; '.join(reply.reasons) or 'no reason given'}"
    return True, "is healthy"


class CallFailed(Exception):
    """The call produced no reply; str() is the sentence to show after the server's name."""


class CallTimeout(CallFailed):
    """The deadline passed: connecting (`connected` False) or waiting for the reply."""

    def __init__(self, timeout: float, connected: bool, rpc: Rpc | None = None):
        self.timeout, self.connected = timeout, connected
        how = f"connected, but no answer to {rpc.name}" if connected and rpc else "connecting timed out"
        super().__init__(f"did not answer within {fmt_seconds(timeout)} ({how})")


class CallStatus(CallFailed):
    """The server answered the call with a gRPC status other than OK."""

    def __init__(self, code: int, message: str, rpc: Rpc):
        self.code, self.message = code, message
        if code == 12:
            text = f"does not implement {rpc.path}" + (f": {message}" if message else "")
        elif code == 14:
            text = f"is unavailable: {message}"
        else:
            text = f"failed {rpc.name} with {STATUS_NAMES.get(code, code)}: {message}"
        super().__init__(text)


def check_health(target: str, timeout: float) -> tuple[bool, str]:
    """Ask Milvus at `target` once, within `timeout` seconds: (healthy, reason). Never raises."""
    try:
        with Connection(target, timeout) as conn:
            ok, what = verdict(conn.call(CHECK_HEALTH))
    except CallTimeout:         # the daemon's own sentence, quoted by its takeover logs, docs and tests
        return False, f"Milvus did not answer CheckHealth within {fmt_seconds(timeout)}"
    except CallFailed as exc:
        return False, f"Milvus at {target} {exc}"
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure is still a failed check, never a crash
        return False, f"Milvus at {target} could not be asked: {type(exc).__name__}: {exc}"
    return ok, f"Milvus at {target} {what}"


class Connection:
    """One HTTP/2 connection to `target` for unary calls one after another, all within
    `timeout` seconds from now. A context manager; raises CallFailed (never OSError)."""

    def __init__(self, target: str, timeout: float, *, clock=time.monotonic):
        self.target, self.timeout, self.clock = target, timeout, clock
        self.deadline = clock() + timeout
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        try:
            self.sock = _connect(target, timeout)
        except TimeoutError:
            raise CallTimeout(timeout, connected=False) from None
        except ConnectionRefusedError:
            raise CallFailed("refused the connection (nothing listening)") from None
        except OSError as exc:
            raise CallFailed(f"is unreachable: {exc.strerror or exc}") from None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def call(self, rpc: Rpc, **fields):
        """`rpc` with a request of `fields`: the reply message, or CallFailed."""
        body = messages()[rpc.request](**fields).SerializeToString()
        try:
            payload = self._exchange(rpc, body)
        except TimeoutError:
            raise CallTimeout(self.timeout, connected=True, rpc=rpc) from None
        except h2.exceptions.ProtocolError as exc:
            raise CallFailed(f"did not speak gRPC (HTTP/2: {exc})") from None
        except (ConnectionError, OSError) as exc:
            raise CallFailed(f"dropped the connection: {exc.strerror or exc}") from None
        try:
            return messages()[rpc.response].FromString(payload)
        except DecodeError:
            raise CallFailed(f"answered {rpc.name} with bytes that are not a {rpc.response}") from None

    def _exchange(self, rpc: Rpc, body: bytes) -> bytes:
        conn, sock = self.h2, self.sock
        sid = conn.get_next_available_stream_id()
        authority = "localhost" if self.target.startswith("unix:") else self.target
        left = max(0.001, self.deadline - self.clock())
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", rpc.path),
                                (":authority", authority), ("te", "trailers"), ("content-type", "application/grpc"),
                                ("grpc-timeout", f"{max(1, int(left * 1000))}m"), ("user-agent", "havip")])
        conn.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
        sock.sendall(conn.data_to_send())
        data, status = b"", None
        while True:
            left = self.deadline - self.clock()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                raise CallFailed("closed the connection before answering")
            if not data and status is None and chunk.startswith(b"HTTP/1."):   # h2 would wait for more
                raise CallFailed("answered HTTP/1, not gRPC (is it the metrics port?)")
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ConnectionTerminated):
                    raise CallFailed(f"closed the connection (HTTP/2 GOAWAY {ev.error_code})")
                if getattr(ev, "stream_id", sid) != sid:       # connection-level events, or a stale stream
                    continue
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    headers = dict(ev.headers)
                    if headers.get(":status", "200") != "200":
                        raise CallFailed(f"answered HTTP {headers[':status']}, not gRPC")
                    if "grpc-status" in headers:           # trailers, or a trailers-only answer
                        status = (int(headers["grpc-status"]), unquote(headers.get("grpc-message", "")))
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    raise CallFailed(f"reset the call (HTTP/2 error {ev.error_code})")
                elif isinstance(ev, h2.events.StreamEnded):
                    return _reply(rpc, status, data)
            pending = conn.data_to_send()              # settings and ping acks, window updates
            if pending:
                sock.sendall(pending)


def _connect(target: str, timeout: float) -> socket.socket:
    if target.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target[len("unix:"):])
        except BaseException:
            sock.close()
            raise
        return sock
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise OSError(f"{target!r} is not host:port")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _reply(rpc: Rpc, status: tuple[int, str] | None, data: bytes) -> bytes:
    if status is None:
        raise CallFailed(f"ended the {rpc.name} call without a gRPC status")
    code, message = status
    if code == 4:               # DEADLINE_EXCEEDED: the server saw our grpc-timeout pass
        raise TimeoutError
    if code:
        raise CallStatus(code, message, rpc)
    if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
        raise CallFailed(f"sent a malformed gRPC message ({len(data)} bytes)")
    return data[5:]
