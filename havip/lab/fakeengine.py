"""A fake Docker engine with one fake Milvus container, for havip daemons in the lab.

Run inside a host's namespace as `python -m havip.lab.fakeengine SOCKET LOG
[PORT]`. It serves the few Docker API calls havip makes (version, inspect, start, stop,
kill, logs) on the unix socket SOCKET; "starting" the container opens a gRPC server on
127.0.0.1:PORT in that namespace that answers Milvus' CheckHealth as healthy, and
stopping closes it. Every start and stop is appended to LOG as a JSON line with the
system-wide monotonic time, so a test can tell whether two Milvus ever ran at once
without a 50 ms sampler (the log is exact).

No pymilvus here: the reply is CheckHealthResponse{isHealthy: true} encoded by hand
(field 2, varint 1), and the request is not parsed.
"""

from __future__ import annotations

import json
import os
import re
import socketserver
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler

HEALTHY = b"\x10\x01"      # milvus.proto.milvus.CheckHealthResponse(isHealthy=True)
SERVICE = "milvus.proto.milvus.MilvusService"


class Container:
    def __init__(self, log_path: str, port: int):
        self.log_path = log_path
        self.port = port
        self.running = False
        self.server = None
        self.lock = threading.Lock()
        self.started_at = "0001-01-01T00:00:00Z"

    def _log(self, what: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps({"event": what, "at": time.monotonic(), "wall": time.time(),
                                "pid": os.getpid()}) + "\n")

    def start(self) -> None:
        import grpc

        with self.lock:
            if self.running:
                return
            server = grpc.server(futures.ThreadPoolExecutor(2))
            handler = grpc.method_handlers_generic_handler(SERVICE, {
                "CheckHealth": grpc.unary_unary_rpc_method_handler(
                    lambda req, ctx: HEALTHY, request_deserializer=None, response_serializer=None)})
            server.add_generic_rpc_handlers((handler,))
            server.add_insecure_port(f"127.0.0.1:{self.port}")
            server.start()
            self.server, self.running = server, True
            self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._log("start")

    def stop(self) -> None:
        with self.lock:
            if not self.running:
                return
            self.server.stop(0).wait(5)
            self.server, self.running = None, False
            self._log("stop")

    def inspect(self) -> dict:
        status = "running" if self.running else "exited"
        return {"Id": "f" * 64, "Name": "/milvus", "State": {
            "Status": status, "Running": self.running, "Paused": False, "ExitCode": 0 if self.running else 137,
            "StartedAt": self.started_at}}


def handler_for(container: Container):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # noqa: D102 - quiet
            pass

        def _send(self, code: int, body: object = None, ctype: str = "application/json") -> None:
            data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Api-Version", "1.41")
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass      # the client gave up (its timeout): the state is what it reads next

        def _route(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = re.sub(r"^/v[0-9.]+", "", self.path.split("?", 1)[0])
            m = re.fullmatch(r"/containers/([^/]+)/(json|start|stop|kill|logs)", path)
            if path in ("/version", "/_ping"):
                return self._send(200, {"ApiVersion": "1.41", "Version": "fake", "MinAPIVersion": "1.12"}
                                  if path == "/version" else b"OK", "application/json")
            if not m or m[1] != "milvus":
                return self._send(404, {"message": f"No such container: {m[1] if m else path}"})
            what = m[2]
            if what == "json" and method == "GET":
                return self._send(200, container.inspect())
            if what == "logs":
                return self._send(200, b"", "application/vnd.docker.raw-stream")
            if method != "POST":
                return self._send(405, {"message": "method not allowed"})
            if what == "start":
                if container.running:
                    return self._send(304)
                container.start()
            elif what in ("stop", "kill"):
                if not container.running and what == "kill":
                    return self._send(409, {"message": "container is not running"})
                container.stop()
            return self._send(204)

        def do_GET(self):  # noqa: N802
            self._route("GET")

        def do_POST(self):  # noqa: N802
            self._route("POST")

    return Handler


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("local", 0)      # BaseHTTPRequestHandler wants an address tuple


def main() -> None:
    sock, log_path = sys.argv[1], sys.argv[2]
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 19530
    if os.path.exists(sock):
        os.unlink(sock)
    container = Container(log_path, port)
    server = Server(sock, handler_for(container))
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        container.stop()


if __name__ == "__main__":
    main()
