"""One member's active check: gRPC unary calls within one deadline, on the daemon's own
client (havip.checks.milvus_grpc: HTTP/2 with h2 and protobuf; no grpcio, no pymilvus).

`milvus` asks `/milvus.proto.milvus.MilvusService/CheckHealth` (what a Milvus proxy and
milvus-lite answer); `grpc-health` asks `/grpc.health.v1.Health/Check` with an empty
service name. With `collections`, a member must also say that each of them is loaded
(GetLoadState): a restarted Milvus answers CheckHealth before its collections are
loaded, and a search sent to it then fails. Every check opens a fresh connection for its
calls, so a node that comes back is seen at the next check (a gRPC channel that failed
backs off reconnecting for up to minutes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from havip.checks import milvus_grpc as g

# What GetLoadState's common.LoadState says about a collection, for the sentences.
LOAD_STATES = {0: "does not exist", 1: "is not loaded", 2: "is still loading", 3: "is loaded"}


@dataclass(frozen=True, slots=True)
class Result:
    """One check of one member. `at` is the monotonic clock when it ended."""

    ok: bool
    reason: str
    latency: float
    at: float


class GrpcCheck:
    """Checks `addr` ("host:port") with `kind` ("milvus" or "grpc-health") within `timeout`."""

    def __init__(self, addr: str, kind: str, timeout: float, *, collections: tuple[str, ...] = (),
                 db: str = "", clock: Callable[[], float] = time.monotonic):
        self.addr, self.kind, self.timeout, self.clock = addr, kind, timeout, clock
        self.collections, self.db = tuple(collections), db

    def __call__(self) -> Result:
        t0 = self.clock()
        ok, what = self._ask()
        now = self.clock()
        return Result(ok, f"{self.addr} {what}", now - t0, now)

    def _ask(self) -> tuple[bool, str]:
        """(ok, sentence without its subject). Never raises."""
        try:
            with g.Connection(self.addr, self.timeout, clock=self.clock) as conn:
                if self.kind == "grpc-health":
                    return serving(conn.call(g.HEALTH_CHECK, service=""))
                ok, what = g.verdict(conn.call(g.CHECK_HEALTH))
                for name in self.collections if ok else ():
                    has, why = loaded(name, conn.call(g.GET_LOAD_STATE, collection_name=name, db_name=self.db))
                    if not has:
                        return False, why
        except g.CallFailed as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - an unforeseen failure is still a failed check, never a crash
            return False, f"could not be asked: {type(exc).__name__}: {exc}"
        if ok and self.collections:
            what += f" and has {', '.join(self.collections)} loaded"
        return ok, what


def serving(reply) -> tuple[bool, str]:
    """(ok, sentence without its subject) for a grpc.health.v1 HealthCheckResponse."""
    if reply.status == g.SERVING:
        return True, "is serving (grpc.health.v1)"
    return False, f"reports {g.enum_name(reply, 'status')} (grpc.health.v1), not SERVING"


def loaded(collection: str, reply) -> tuple[bool, str]:
    """(ok, sentence without its subject) for a GetLoadStateResponse about `collection`."""
    code, why = reply.status.code or reply.status.error_code, reply.status.reason or "no reason given"
    if code:
        return False, f"answered GetLoadState({collection}) with error {code}: {why}"
    if reply.state != g.LOADED:
        state = LOAD_STATES.get(reply.state) or f"is in load state {reply.state}"
        return False, f"is healthy but collection {collection} {state}"
    return True, f"has {collection} loaded"

