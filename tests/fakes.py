"""Fakes for the daemon's adapters: they record calls and can be told to fail.

Each fake has the same methods as the real adapter it stands for (havip/net/*,
havip/runtime/container.py, havip/checks/probes.py). Selectable fakes use a pipe so
that the real select() loop can run over them.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from havip.checks.probes import CheckResult
from havip.errors import AdapterError
from havip.net.link import LinkStatus
from havip.net.sock import Received


class _Selectable:
    def __init__(self):
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)

    def fileno(self) -> int:
        return self._r

    def _signal(self) -> None:
        os.write(self._w, b"x")

    def _drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class FakeSocket(_Selectable):
    def __init__(self, source: str = "198.18.0.11", destinations=("224.0.0.18",)):
        super().__init__()
        self.source = source
        self.destinations = list(destinations)
        self.sent: list[tuple[bytes, str]] = []
        self.inbox: deque[Received] = deque()
        self.send_error: Exception | None = None
        self.recv_error: Exception | None = None
        self.closed = False

    def send_to(self, payload: bytes, dst: str) -> None:
        if self.send_error:
            raise self.send_error
        self.sent.append((payload, dst))

    def deliver(self, payload: bytes, src: str, ttl: int | None = 255, dst: str = "224.0.0.18",
                stamp: float | None = None) -> None:
        self.inbox.append(Received(payload=payload, src=src, dst=dst, ttl=ttl, stamp=stamp))
        self._signal()

    def recv(self) -> Received | None:
        if self.recv_error is not None:
            self._drain()
            raise self.recv_error
        if not self.inbox:
            self._drain()
            return None
        return self.inbox.popleft()

    def close(self) -> None:
        self.closed = True
        super().close()


class FakeBeacon(_Selectable):
    """The peer beacon's sockets: deliver(data, src, ttl) queues a datagram; sent records."""

    def __init__(self, source: str = "198.18.0.11"):
        super().__init__()
        self.source = source
        self.sent: list[bytes] = []
        self.inbox: deque[tuple[bytes, str, int | None]] = deque()
        self.closed = False

    def deliver(self, data: bytes, src: str, ttl: int | None = 255) -> None:
        self.inbox.append((data, src, ttl))
        self._signal()

    def recv(self):
        if not self.inbox:
            self._drain()
            return None
        return self.inbox.popleft()

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True
        super().close()


class FakeVips:
    def __init__(self, vips=("198.18.0.50/24",)):
        self.vips = list(vips)
        self.attached = False
        self.calls: list[str] = []
        self.error: Exception | None = None

    def add(self) -> list[str]:
        self.calls.append("add")
        if self.error:
            raise self.error
        was, self.attached = self.attached, True
        return [] if was else list(self.vips)

    def remove(self) -> list[str]:
        self.calls.append("remove")
        if self.error:
            raise self.error
        was, self.attached = self.attached, False
        return list(self.vips) if was else []

    def prepare(self) -> None:
        self.prepared = getattr(self, "prepared", 0) + 1

    def close(self) -> None:
        pass


class FakeAnnouncer:
    def __init__(self):
        self.announced = 0

    def announce(self, vips) -> int:
        self.announced += 1
        return len(vips)

    def close(self) -> None:
        pass


class FakeLink(_Selectable):
    def __init__(self, up: bool = True):
        super().__init__()
        self.up = up

    def set(self, up: bool) -> None:
        self.up = up
        self._signal()

    drain_error: Exception | None = None     # set to make the loop itself fail (not an input path)

    def drain(self) -> bool:
        self._drain()
        if self.drain_error is not None:
            raise self.drain_error
        return True

    def status(self) -> LinkStatus:
        return LinkStatus(exists=True, up=self.up, detail="eth0 is up" if self.up else "eth0 has no carrier")


@dataclass
class FakeRuntime:
    running: bool = False
    start_error: Exception | None = None
    stop_error: Exception | None = None
    ready: bool = True

    def __post_init__(self):
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")
        if self.start_error:
            raise self.start_error
        self.running = True

    def stop(self, timeout: float | None = None) -> bool:
        self.calls.append("stop" if timeout is None else f"stop(timeout={timeout})")
        if self.stop_error:
            raise self.stop_error
        was, self.running = self.running, False
        return was

    def is_running(self) -> bool | None:
        return self.running

    def wait_ready(self, probe, timeout: float, poll: float = 0.1, cancel=None) -> CheckResult:
        ok = self.ready and self.running
        return CheckResult("grpc", ok, "Milvus answered CheckHealth" if ok else "Milvus never became healthy",
                           0.01, 0.0)


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def fail(msg: str = "netlink said no") -> AdapterError:
    return AdapterError(msg)


class FakeLease:
    """A storage lease over a shared `board` (a dict: who holds it), one per host; records
    calls and can be told to fail (`error`) or to hang (`hang`, a threading.Event to wait on)."""

    def __init__(self, holder: str = "h2", board: dict | None = None, path: str = "/s/.havip-lease"):
        self.holder = holder
        self.board = board if board is not None else {}
        self.path = path
        self.calls: list[str] = []
        self.error: Exception | None = None
        self.hang = None

    def _io(self, call: str) -> None:
        self.calls.append(call)
        if self.hang is not None:
            self.hang.wait(10)
        if self.error:
            raise self.error

    @property
    def held(self) -> bool:
        return self.board.get("holder") == self.holder

    def acquire(self):
        from havip.runtime.lease import LeaseResult

        self._io("acquire")
        if self.board.get("holder") in (None, self.holder):
            self.board["holder"] = self.holder
            return LeaseResult(True, f"storage lease {self.path} acquired")
        return LeaseResult(False, f"the storage lease {self.path} is held by {self.board['holder']}",
                           holder=self.board["holder"])

    def renew(self) -> None:
        self._io("renew")
        if not self.held:
            raise AdapterError(f"the storage lease {self.path} is not held by this host")

    def release(self) -> str | None:
        self._io("release")
        if not self.held:
            return None
        self.board["holder"] = None
        return f"storage lease {self.path} released"

    def view(self) -> dict:
        return {"path": self.path, "held_here": self.held, "known": True, "holder": self.board.get("holder")}

    def status(self) -> dict:
        return {"path": self.path, "held_here": self.held, "holder": self.board.get("holder")}
