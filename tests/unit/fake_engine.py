"""A Docker engine that speaks just enough HTTP on a unix socket: /version, and /events
as the scenario says (chunks to send, then hold the connection open or close it)."""

from __future__ import annotations

import json
import socket
import threading


class FakeEngine:
    def __init__(self, path: str, scenario):
        self.path = path
        self.scenario = scenario          # (n) -> list of bytes chunks | "hold" | "close" | "noheaders"
        self.events_requests = 0
        self.sent = 0                     # bytes of /events bodies sent
        self.open_conns: set[socket.socket] = set()
        self._stop = threading.Event()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(64)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.open_conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        try:
            f = conn.makefile("rb")
            while True:
                line = f.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                if path.endswith("/version") or path == "/version":
                    body = json.dumps({"ApiVersion": "1.41", "Version": "20.10.24", "MinAPIVersion": "1.12"}).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
                    continue
                n = self.events_requests
                self.events_requests += 1
                plan = self.scenario(n)
                if plan == "noheaders":
                    self._stop.wait(60)
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                for step in plan:
                    if step == "hold":
                        self._stop.wait(60)
                        return
                    if step == "close":
                        conn.sendall(b"0\r\n\r\n")
                        return
                    conn.sendall(b"%x\r\n" % len(step) + step + b"\r\n")
                    self.sent += len(step)
                return
        except OSError:
            return
        finally:
            self.open_conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self.srv.close()
        for c in list(self.open_conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
