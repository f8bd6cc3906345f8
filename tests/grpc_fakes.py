"""A gRPC server (grpcio's, tests only) that answers what havip's checks ask: Milvus'
CheckHealth and GetLoadState with our own declared messages, and grpc.health.v1's Check
with grpcio-health-checking's own servicer. It listens on a unix socket in the test's
temporary directory: no network at all.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from havip.checks.milvus_grpc import messages

M = messages()


class FakeMilvus:
    """Answers CheckHealth with `self.reply` (a CheckHealthResponse, or "hang" to never
    answer within the deadline), GetLoadState with `self.load_states[collection]` (a
    GetLoadStateResponse, LoadStateNotExist if absent, or "hang"), and grpc.health.v1 Check from
    `self.health` (grpc_health's HealthServicer: `self.health.set("", status)`)."""

    def __init__(self, path):
        self.target = f"unix:{path}"
        self.reply = M["CheckHealthResponse"](isHealthy=True)
        self.load_states: dict[str, object] = {}
        self.load_requests: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.calls = 0
        handler = grpc.method_handlers_generic_handler("milvus.proto.milvus.MilvusService", {
            "CheckHealth": grpc.unary_unary_rpc_method_handler(
                self._check, request_deserializer=M["CheckHealthRequest"].FromString,
                response_serializer=self._serialize),
            "GetLoadState": grpc.unary_unary_rpc_method_handler(
                self._load_state, request_deserializer=M["GetLoadStateRequest"].FromString,
                response_serializer=M["GetLoadStateResponse"].SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_insecure_port(self.target)
        self.server.start()

    @staticmethod
    def _serialize(reply) -> bytes:
        return reply if isinstance(reply, bytes) else reply.SerializeToString()    # bytes: sent as they are

    def _check(self, request, context):
        self.calls += 1
        if isinstance(self.reply, str) and self.reply == "hang":
            self.release.wait(10)
            return M["CheckHealthResponse"](isHealthy=True)
        return self.reply

    def _load_state(self, request, context):
        self.load_requests.append((request.collection_name, request.db_name))
        reply = self.load_states.get(request.collection_name, M["GetLoadStateResponse"]())
        if isinstance(reply, str) and reply == "hang":
            self.release.wait(10)
            return M["GetLoadStateResponse"]()
        return reply

    def stop(self):
        self.release.set()
        self.server.stop(0).wait(5)
