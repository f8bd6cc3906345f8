"""The lab client's "fresh connection after a failure" must be a new TCP connection.

grpc-core shares one subchannel (one TCP connection) between every channel of a process
to the same target with the same options, so a Session that dropped its client after a
failure got the old connection (and its reconnect backoff) back while another Session of
the worker (the writer beside the prober) still held it. `GRPC_OPTIONS` asks for a
subchannel pool per channel; this test shows two channels made with them reach the
server over two connections (it saw one without the option).
"""

from __future__ import annotations

from concurrent import futures

import grpc

from havip.lab.milvus_worker import GRPC_OPTIONS


class _Peers(grpc.GenericRpcHandler):
    def __init__(self):
        self.peers: list[str] = []

    def service(self, handler_call_details):
        def echo(request, context):
            self.peers.append(context.peer())
            return b""
        return grpc.unary_unary_rpc_method_handler(echo, request_deserializer=None, response_serializer=None)


def _peers_seen(options: dict) -> set[str]:
    handler = _Peers()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=list(options.items())) for _ in range(2)]
    try:
        for ch in channels:
            ch.unary_unary("/t.T/Echo", request_serializer=None, response_deserializer=None)(b"", timeout=5)
        return set(handler.peers)
    finally:
        for ch in channels:
            ch.close()
        server.stop(None)


def test_two_sessions_of_one_worker_use_two_connections():
    assert len(_peers_seen(GRPC_OPTIONS)) == 2


def test_without_the_option_grpc_shares_one_connection():
    # The reason for the option: without it the two channels are one connection.
    options = {k: v for k, v in GRPC_OPTIONS.items() if k != "grpc.use_local_subchannel_pool"}
    assert len(_peers_seen(options)) == 1
