"""The control socket's connection handling: bounded in every dimension a client controls.

One thread owns the listening socket and every connection (non-blocking, one selector);
a small pool of workers turns a complete request line into an answer. What a client can
hold is bounded:

- **bytes**: a request is one line of at most `max_request` bytes;
- **time**: the whole request must arrive within `request_timeout` of the accept (a
  deadline per request, not per recv: a byte every few seconds does not keep a
  connection open), and the answer must be taken within `write_timeout`;
- **connections**: at most `max_connections` at once, well below RLIMIT_NOFILE, so a
  flood of clients can never take the file descriptors the daemon loop needs (its
  sockets, pipes, the lease file). At the cap, a connection that has been sending its
  request for longer than `evict_after` gives way to a new one (clients that send at
  once are served; a slow-loris is not); otherwise new connections wait in the listen
  backlog (`backlog`, sized for bursts) until a slot frees;
- **threads**: `workers` threads, whatever the number of clients; each asks the loop
  through `daemon.call`, so the loop runs at most `workers` requests per cycle.

Anything that goes wrong with one connection closes that connection, never the server.
"""

from __future__ import annotations

import errno
import queue
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

BACKLOG = 1024              # the kernel caps it at net.core.somaxconn (4096 on current kernels)
WORKERS = 4
REQUEST_TIMEOUT = 5.0       # from accept to the end of the request line
WRITE_TIMEOUT = 5.0         # for the client to take the answer
EVICT_AFTER = 0.5           # at the cap, an incomplete request this old gives way
ACCEPT_PAUSE = 0.1          # after EMFILE/ENFILE on accept, before trying again
_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def connection_cap(nofile: int | None = None) -> int:
    """Connections served at once: an eighth of the soft RLIMIT_NOFILE, between 8 and 256.

    With the usual soft limit of 1024 that is 128, leaving ~900 descriptors to the
    loop, its adapters and the checks, whatever clients do.
    """
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        nofile = 1 << 20 if nofile == resource.RLIM_INFINITY else nofile
    return max(8, min(256, nofile // 8))


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    opened: float
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    out: memoryview | None = None
    phase: str = "read"             # read -> work -> write


class Listener:
    """Serve `answer(line) -> bytes` on a bound Unix socket (`answer` runs on a worker).

    `refuse(sock)` runs at accept, before anything is read (peer credentials): bytes to
    answer at once, or None to read the request. `timeout_reply` is sent to a client whose
    request did not arrive in time. `counters` counts refusals and drops by reason.
    """

    def __init__(self, sock: socket.socket, answer: Callable[[bytes], bytes], *, log,
                 refuse: Callable[[socket.socket], bytes | None] | None = None, timeout_reply: bytes = b"",
                 max_request: int = 64 * 1024, request_timeout: float = REQUEST_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT, max_connections: int | None = None,
                 workers: int = WORKERS, backlog: int = BACKLOG, evict_after: float = EVICT_AFTER,
                 clock: Callable[[], float] = time.monotonic):
        self.sock = sock
        self.answer = answer
        self.refuse = refuse
        self.timeout_reply = timeout_reply
        self.log = log
        self.max_request = max_request
        self.request_timeout = request_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections or connection_cap()
        self.evict_after = evict_after
        self.clock = clock
        self.counters: dict[str, int] = {}
        self._conns: dict[int, _Conn] = {}
        self._done: queue.SimpleQueue[tuple[_Conn, bytes]] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="havip-control-worker")
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._listening = False
        self._accept_after = 0.0
        self._last_warning: dict[str, float] = {}
        sock.listen(backlog)
        sock.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._listen(True)
        self._thread = threading.Thread(target=self._run, name="havip-control", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ life cycle

    def close(self) -> None:
        """Stop serving; close every connection (answers in flight are dropped)."""
        self._stopping = True
        self._wake()
        self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for conn in list(self._conns.values()):
            self._close(conn)
        for s in (self._wake_r, self._wake_w, self.sock):
            s.close()
        self._sel.close()

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass                    # already awake (buffer full) or closing

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._cycle()
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the control socket
                self._count("internal")
                self._warn("internal", "control_server_error", error=repr(exc))
                time.sleep(0.05)

    def _cycle(self) -> None:
        now = self.clock()
        deadlines = [c.deadline for c in self._conns.values() if c.phase != "work"]
        if not self._listening:
            deadlines.append(self._resume_at())
        timeout = min(max(0.0, min(deadlines, default=now + 0.5) - now), 0.5)
        for key, _mask in self._sel.select(timeout):
            if key.fileobj is self._wake_r:
                self._drain_wake()
            elif key.fileobj is self.sock:
                self._accept()
            else:
                conn = key.data
                if conn.phase == "read":
                    self._read(conn)
                elif conn.phase == "write":
                    self._write(conn)
        self._collect()
        self._expire(self.clock())
        if not self._listening and self.clock() >= self._resume_at():
            self._listen(True)

    def _resume_at(self) -> float:
        """When accepting may resume: after an fd error's pause, once a slot is free or an
        incomplete request is old enough to give way (evict_after)."""
        if len(self._conns) < self.max_connections:
            return self._accept_after
        slow = [c.opened for c in self._conns.values() if c.phase == "read"]
        return max(self._accept_after, min(slow) + self.evict_after) if slow else float("inf")

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _listen(self, on: bool) -> None:
        if on and not self._listening:
            self._sel.register(self.sock, selectors.EVENT_READ, None)
            self._accept_after = 0.0
        elif not on and self._listening:
            self._sel.unregister(self.sock)
        self._listening = on

    # ------------------------------------------------------------------ connections

    def _accept(self) -> None:
        while True:
            if len(self._conns) >= self.max_connections and not self._evict():
                self._listen(False)          # the rest wait in the backlog until a slot frees
                self._count("at_capacity")
                return
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _FD_ERRORS:
                    self._count("accept_no_fd")
                    self._warn("accept", "control_accept_failed", error=exc.strerror,
                               consequence=f"not accepting for {ACCEPT_PAUSE}s")
                    self._listen(False)
                    self._accept_after = self.clock() + ACCEPT_PAUSE
                else:
                    self._count("accept_error")
                return
            self._open(sock)

    def _open(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        now = self.clock()
        conn = _Conn(sock, opened=now, deadline=now + self.request_timeout)
        self._conns[sock.fileno()] = conn
        refusal = self.refuse(sock) if self.refuse is not None else None
        if refusal is not None:
            self._count("refused")
            self._reply(conn, refusal)
        else:
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _evict(self) -> bool:
        """Make room: close the oldest connection still sending its request after evict_after."""
        now = self.clock()
        slow = [c for c in self._conns.values() if c.phase == "read" and now - c.opened >= self.evict_after]
        if not slow:
            return False
        oldest = min(slow, key=lambda c: c.opened)
        self._count("evicted_slow")
        self._close(oldest)
        return True

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:                    # the client shut down its side: what it sent is the request
            if conn.buf:
                self._submit(conn, bytes(conn.buf))
            else:
                self._close(conn)
            return
        conn.buf += data
        end = conn.buf.find(b"\n")
        if end >= 0:
            self._submit(conn, bytes(conn.buf[:end]))
        elif len(conn.buf) > self.max_request:
            self._count("too_long")
            self._submit(conn, bytes(conn.buf))     # answer() refuses it by its length

    def _submit(self, conn: _Conn, line: bytes) -> None:
        self._sel.unregister(conn.sock)
        conn.phase, conn.buf = "work", bytearray()

        def work() -> None:
            try:
                out = self.answer(line)
            except Exception as exc:  # noqa: BLE001 - answer() promises not to raise; a bug closes one connection
                self._warn("internal", "control_answer_failed", error=repr(exc))
                out = b""
            self._done.put((conn, out))
            self._wake()

        self._pool.submit(work)

    def _collect(self) -> None:
        while True:
            try:
                conn, out = self._done.get_nowait()
            except queue.Empty:
                return
            if self._conns.get(conn.sock.fileno()) is conn:
                self._reply(conn, out)

    def _reply(self, conn: _Conn, out: bytes) -> None:
        if not out:
            self._close(conn)
            return
        conn.phase, conn.out = "write", memoryview(out)
        conn.deadline = self.clock() + self.write_timeout
        self._write(conn)
        if conn.phase == "write" and self._conns.get(conn.sock.fileno()) is conn:
            self._sel.register(conn.sock, selectors.EVENT_WRITE, conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not len(conn.out):
            self._close(conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.phase != "work" and c.deadline <= now]:
            if conn.phase == "read":
                self._count("request_timeout")
                try:
                    conn.sock.send(self.timeout_reply)     # best effort: one short line
                except OSError:
                    pass
            else:
                self._count("write_timeout")
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        try:
            fd = conn.sock.fileno()
        except OSError:
            return
        if self._conns.get(fd) is conn:
            del self._conns[fd]
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        conn.phase = "closed"

    # ------------------------------------------------------------------ reporting

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def _warn(self, kind: str, event: str, **fields) -> None:
        """At most one warning per kind every 10 s, with the counters so far."""
        now = self.clock()
        if now - self._last_warning.get(kind, -1e9) >= 10.0:
            self._last_warning[kind] = now
            self.log.warning(event, counters=dict(self.counters), **fields)


