"""Milvus' CheckHealth over gRPC, without pymilvus and without grpcio.

A daemon that asks one question every half second needs neither of them:
- pymilvus' generated stubs live in a package whose `__init__` loads pandas and numpy
  (the daemon went from 69 to 176 MB of RSS, and half a second on the takeover path);
- grpcio's C core alone is 16 MB of resident library pages (measured: the daemon with
  every check loaded was 100 MB with grpcio, 82 MB with this module).

So the call is made by hand, as gRPC defines it over HTTP/2 (PROTOCOL-HTTP2.md in
grpc/grpc): one POST on a fresh connection per check, with `h2` (python-hyper's HTTP/2
state machine, pure Python) doing the framing, flow control and HPACK, and protobuf
decoding the three messages, declared here as a descriptor built at runtime:

    service milvus.proto.milvus.MilvusService {
      rpc CheckHealth(CheckHealthRequest) returns (CheckHealthResponse);
    }
    message CheckHealthRequest {}
    message CheckHealthResponse {
      common.Status status = 1; bool isHealthy = 2; repeated string reasons = 3;
      // quota_states = 4 (repeated enum) is not declared: protobuf keeps it as unknown
    }
    message common.Status { int32 error_code = 1; string reason = 2; int32 code = 3; ... }

The field numbers are Milvus' (milvus-proto: milvus.proto, common.proto); `error_code` is
an enum there, a varint on the wire like an int32. Unknown fields are skipped and missing
ones read as defaults, so a newer Milvus with more fields answers the same.

A fresh connection per check costs one TCP handshake (local, ~0.1 ms) and has no state to
go stale: a long-lived gRPC channel that once saw a refused connection backs off
reconnecting for up to minutes, which is exactly when a takeover needs an answer.

`check_health(target, timeout) -> (healthy, reason)` is the API (also for the read
pool's checks); `target` is host:port, [v6]:port or unix:/path.
"""

from __future__ import annotations

import socket
import time
from functools import lru_cache
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from havip.checks.probes import fmt_seconds

METHOD = "/milvus.proto.milvus.MilvusService/CheckHealth"
_PACKAGE = "havip.milvus_health"     # our own package name: never clashes with pymilvus' in one process
# gRPC status codes (grpc/doc/statuscodes.md) by number, for the sentences.
STATUS_NAMES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
                6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
                10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
                15: "DATA_LOSS", 16: "UNAUTHENTICATED"}

_T = descriptor_pb2.FieldDescriptorProto


@lru_cache(maxsize=1)
def messages() -> tuple[type, type]:
    """(CheckHealthRequest, CheckHealthResponse) classes, built once per process."""
    fd = descriptor_pb2.FileDescriptorProto(name="havip/milvus_health.proto", package=_PACKAGE, syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name

    one, many = _T.LABEL_OPTIONAL, _T.LABEL_REPEATED
    message("Status", ("error_code", 1, _T.TYPE_INT32, one, ""), ("reason", 2, _T.TYPE_STRING, one, ""),
            ("code", 3, _T.TYPE_INT32, one, ""))
    message("CheckHealthRequest")
    message("CheckHealthResponse", ("status", 1, _T.TYPE_MESSAGE, one, f".{_PACKAGE}.Status"),
            ("isHealthy", 2, _T.TYPE_BOOL, one, ""), ("reasons", 3, _T.TYPE_STRING, many, ""))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = lambda n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{n}"))  # noqa: E731
    return get("CheckHealthRequest"), get("CheckHealthResponse")


def verdict(target: str, reply) -> tuple[bool, str]:
    """(healthy, sentence) for a CheckHealthResponse."""
    if reply.status.code or reply.status.error_code:
        code = reply.status.code or reply.status.error_code
        return False, f"Milvus answered CheckHealth with error {code}: {reply.status.reason or 'no reason given'}"
    if not reply.isHealthy:
        reasons = "; ".join(reply.reasons) or "no reason given"
        return False, f"Milvus reports unhealthy: {reasons}"
    return True, f"Milvus at {target} is healthy"


class CallFailed(Exception):
    """The call did not produce an answer; str() is the sentence to show."""


def check_health(target: str, timeout: float) -> tuple[bool, str]:
    """Ask Milvus at `target` once, within `timeout` seconds: (healthy, reason). Never raises."""
    request, response = messages()
    try:
        payload = unary_call(target, METHOD, request().SerializeToString(), timeout)
        reply = response.FromString(payload)
    except CallFailed as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - a malformed answer or address: still a failed check
        return False, f"Milvus at {target} could not be asked: {type(exc).__name__}: {exc}"
    return verdict(target, reply)


def unary_call(target: str, method: str, body: bytes, timeout: float) -> bytes:
    """One gRPC unary call: the reply message's bytes, or CallFailed with a sentence."""
    deadline = time.monotonic() + timeout
    late = CallFailed(f"Milvus did not answer CheckHealth within {fmt_seconds(timeout)}")
    try:
        sock = _connect(target, timeout)
    except TimeoutError:
        raise late from None
    except ConnectionRefusedError:
        raise CallFailed(f"Milvus at {target} refused the connection (nothing listening)") from None
    except OSError as exc:
        raise CallFailed(f"Milvus at {target} is unreachable: {exc.strerror or exc}") from None
    try:
        return _exchange(sock, target, method, body, deadline, timeout)
    except TimeoutError:
        raise late from None
    except h2.exceptions.ProtocolError as exc:
        raise CallFailed(f"Milvus at {target} did not speak gRPC (HTTP/2: {exc})") from None
    except (ConnectionError, OSError) as exc:
        raise CallFailed(f"Milvus at {target} dropped the connection: {exc.strerror or exc}") from None
    finally:
        sock.close()


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


def _exchange(sock: socket.socket, target: str, method: str, body: bytes, deadline: float, timeout: float) -> bytes:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    authority = "localhost" if target.startswith("unix:") else target
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", method), (":authority", authority),
                            ("te", "trailers"), ("content-type", "application/grpc"),
                            ("grpc-timeout", f"{max(1, int(timeout * 1000))}m"), ("user-agent", "havip")])
    conn.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
    sock.sendall(conn.data_to_send())
    data, status = b"", None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise CallFailed(f"Milvus at {target} closed the connection before answering")
        if not data and status is None and chunk.startswith(b"HTTP/1."):   # h2 would wait for more
            raise CallFailed(f"Milvus at {target} answered HTTP/1, not gRPC (is it the metrics port?)")
        for ev in conn.receive_data(chunk):
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                headers = dict(ev.headers)
                if headers.get(":status", "200") != "200":
                    raise CallFailed(f"Milvus at {target} answered HTTP {headers[':status']}, not gRPC")
                if "grpc-status" in headers:           # trailers, or a trailers-only answer
                    status = (int(headers["grpc-status"]), unquote(headers.get("grpc-message", "")))
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                raise CallFailed(f"Milvus at {target} reset the call (HTTP/2 error {ev.error_code})")
            elif isinstance(ev, h2.events.ConnectionTerminated):
                raise CallFailed(f"Milvus at {target} closed the connection (HTTP/2 GOAWAY {ev.error_code})")
            elif isinstance(ev, h2.events.StreamEnded):
                return _reply(target, status, data)
        pending = conn.data_to_send()              # settings and ping acks, window updates
        if pending:
            sock.sendall(pending)


def _reply(target: str, status: tuple[int, str] | None, data: bytes) -> bytes:
    if status is None:
        raise CallFailed(f"Milvus at {target} ended the call without a gRPC status")
    code, message = status
    if code == 14:
        raise CallFailed(f"Milvus at {target} is unavailable: {message}")
    if code:
        raise CallFailed(f"Milvus CheckHealth failed with {STATUS_NAMES.get(code, code)}: {message}")
    if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
        raise CallFailed(f"Milvus at {target} sent a malformed gRPC message ({len(data)} bytes)")
    return data[5:]
