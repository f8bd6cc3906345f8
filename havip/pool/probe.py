"""One member's active check: a gRPC unary call with a deadline, no pymilvus.

`milvus` asks `/milvus.proto.milvus.MilvusService/CheckHealth` (what a Milvus proxy and
milvus-lite answer); `grpc-health` asks `/grpc.health.v1.Health/Check` with an empty
service name. Both requests are empty messages, so they serialize to b"" and the
replies are decoded by `havip.pool.wire`. With `collections`, a member must also say
that each of them is loaded (GetLoadState): a restarted Milvus answers CheckHealth
before its collections are loaded, and a search sent to it then fails. A channel that failed is dropped: gRPC backs
off reconnecting a failed channel for up to minutes, which would hide a node's return.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from havip.pool.wire import (LOAD_STATES, LOADED, WireError, decode_health, decode_load_state,
                             encode_load_state_request, fields)

MILVUS_CHECK = "/milvus.proto.milvus.MilvusService/CheckHealth"
GRPC_HEALTH = "/grpc.health.v1.Health/Check"
LOAD_STATE = "/milvus.proto.milvus.MilvusService/GetLoadState"
SERVING = 1                 # grpc.health.v1.HealthCheckResponse.ServingStatus
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 500), ("grpc.enable_retries", 0)]


@dataclass(frozen=True, slots=True)
class Result:
    """One check of one member. `at` is the monotonic clock when it ended."""

    ok: bool
    reason: str
    latency: float
    at: float


def _seconds(t: float) -> str:
    return f"{t:g}s"


class GrpcCheck:
    """Checks `addr` ("host:port") with `kind` ("milvus" or "grpc-health") within `timeout`."""

    def __init__(self, addr: str, kind: str, timeout: float, *, collections: tuple[str, ...] = (),
                 db: str = "", clock: Callable[[], float] = time.monotonic):
        self.addr, self.kind, self.timeout, self.clock = addr, kind, timeout, clock
        self.collections, self.db = tuple(collections), db
        self._channel = None
        self._call = None
        self._load_state = None
        self._lock = threading.Lock()

    def _callable(self):
        import grpc     # grpcio only: the pool daemon never imports pymilvus

        with self._lock:
            if self._call is None:
                self._channel = grpc.insecure_channel(self.addr, options=CHANNEL_OPTIONS)
                method = MILVUS_CHECK if self.kind == "milvus" else GRPC_HEALTH
                self._call = self._channel.unary_unary(method, request_serializer=lambda _: b"",
                                                       response_deserializer=lambda b: b)
                self._load_state = self._channel.unary_unary(LOAD_STATE, request_serializer=lambda b: b,
                                                             response_deserializer=lambda b: b)
            return self._call

    def close(self) -> None:
        with self._lock:
            channel, self._channel, self._call, self._load_state = self._channel, None, None, None
        if channel is not None:
            channel.close()

    def __call__(self) -> Result:
        t0 = self.clock()
        ok, reason = self._ask()
        if not ok:
            self.close()
        now = self.clock()
        return Result(ok, reason, now - t0, now)

    def _ask(self) -> tuple[bool, str]:
        import grpc

        deadline = self.clock() + self.timeout
        try:
            reply = self._callable()(None, timeout=self.timeout, wait_for_ready=False)
            ok, reason = self._verdict(reply)
            for name in self.collections if ok else ():
                left = max(0.001, deadline - self.clock())
                state, err, code, why = decode_load_state(
                    self._load_state(encode_load_state_request(name, self.db), timeout=left, wait_for_ready=False))
                if err or code:
                    return False, f"{self.addr} answered GetLoadState({name}) with error {code or err}: {why}"
                if state != LOADED:
                    return False, f"{self.addr} is healthy but collection {name} {LOAD_STATES.get(state, state)}"
            if ok and self.collections:
                reason += f" and has {', '.join(self.collections)} loaded"
            return ok, reason
        except grpc.RpcError as exc:
            return False, self._describe(exc)
        except WireError as exc:
            return False, f"{self.addr} answered with a reply that is not a health response ({exc})"
        except Exception as exc:  # noqa: BLE001 - a malformed address is a failed check with its reason
            return False, f"{self.addr} could not be asked: {exc}"

    def _verdict(self, reply: bytes) -> tuple[bool, str]:
        if self.kind == "grpc-health":
            status = next((v for n, t, v in fields(reply) if n == 1 and t == 0), 0)
            if status == SERVING:
                return True, f"{self.addr} is serving (grpc.health.v1)"
            return False, f"{self.addr} reports status {status} (grpc.health.v1), not SERVING"
        h = decode_health(reply)
        if h.code or h.error_code:
            return False, f"{self.addr} answered CheckHealth with error {h.code or h.error_code}: " \
                          f"{h.reason or 'no reason given'}"
        if not h.healthy:
            return False, f"{self.addr} reports unhealthy: {'; '.join(h.reasons) or 'no reason given'}"
        return True, f"{self.addr} is healthy"

    def _describe(self, exc) -> str:
        import grpc

        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"{self.addr} did not answer within {_seconds(self.timeout)}"
        if "timed out" in details.lower():
            # A stopped process: the kernel accepts the TCP connection, nobody speaks HTTP/2.
            return f"{self.addr} did not answer within {_seconds(self.timeout)} (connected, but no gRPC answer)"
        if "refused" in details.lower():
            return f"{self.addr} refused the connection (nothing listening)"
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return f"{self.addr} does not implement {MILVUS_CHECK if self.kind == 'milvus' else GRPC_HEALTH}"
        name = code.name if code is not None else "error"
        return f"{self.addr} check failed with {name}: {details[:200]}"
