"""Health probes: Docker (is the container up, could this host serve) and Milvus gRPC.

Every probe returns a `CheckResult` and never raises for the conditions it exists to
detect: an unreachable engine, a missing container or a hung Milvus are failed
results whose `reason` is one sentence fit for the log and `havipctl status`. Every
call has a deadline, so a probe returns within about its `timeout`.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

import docker
import docker.errors
import requests.exceptions

from havip.errors import HavipError
from havip.fmt import fmt_seconds

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One run of one check. `latency` in seconds; `at` is the probe clock (monotonic).

    `final`: a failure that running the check again cannot undo (the container has
    exited: nothing in it will answer until something starts it again), so on the
    master the runner does not wait for `fall` failures in a row before reporting it."""

    name: str
    ok: bool
    reason: str
    latency: float
    at: float
    final: bool = False


def check_name(name: str) -> Callable:
    """Name a probe method, so a runner can name it before it first returns (if it hangs)."""
    def mark(fn: Callable) -> Callable:
        fn.check_name = name
        return fn
    return mark


# ------------------------------------------------------------------ Docker engine


class EngineClient:
    """A Docker API client created on first use and dropped after a connection failure,
    so a restarted engine is picked up. Shared by the probes and ContainerRuntime."""

    def __init__(self, url: str, timeout: float):
        self.url = url
        self.timeout = timeout
        self._api: docker.APIClient | None = None
        self._lock = threading.Lock()

    def api(self) -> docker.APIClient:
        with self._lock:
            if self._api is None:
                # version="auto" asks the engine, within `timeout`, which API it speaks.
                self._api = docker.APIClient(base_url=self.url, version="auto", timeout=self.timeout)
            return self._api

    def reset(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()

    def inspect(self, container: str) -> dict | None:
        """The container's inspect document, None if it does not exist.
        Raises EngineUnreachable (a clear sentence) or docker.errors.APIError."""
        try:
            return self.api().inspect_container(container)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError:
            raise
        except Exception as exc:  # noqa: BLE001 - requests/urllib3/socket errors, all "unreachable"
            self.reset()
            raise EngineUnreachable(self.describe(exc)) from exc

    def describe(self, exc: BaseException) -> str:
        """One sentence for an exception that means the engine did not answer."""
        return f"Docker engine at {self.url} {engine_failure(exc, self.timeout)}"


class EngineUnreachable(Exception):
    """The engine did not answer; str() is the sentence to show."""


def engine_failure(exc: BaseException, timeout: float) -> str:
    """The end of "Docker engine at URL ..." for a transport failure, from the root cause."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (requests.exceptions.Timeout, socket.timeout, TimeoutError)):
            return f"did not answer within {fmt_seconds(timeout)}"
        if isinstance(cur, FileNotFoundError):
            return "is unreachable: its socket does not exist"
        if isinstance(cur, ConnectionRefusedError):
            return "is unreachable: connection refused"
        if isinstance(cur, PermissionError):
            return "is unreachable: permission denied on its socket"
        nxt = cur.__cause__ or cur.__context__
        if nxt is None and cur.args and isinstance(cur.args[-1], BaseException):
            nxt = cur.args[-1]          # urllib3 hides the OSError in args
        cur = nxt
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "timed out" in text.lower():
        return f"did not answer within {fmt_seconds(timeout)}"
    return f"is unreachable: {text}"


def describe_state(container: str, info: dict) -> tuple[bool, str]:
    """(ok, sentence) for an inspect document: running, and healthy if it has a healthcheck."""
    state = info.get("State") or {}
    if not state.get("Running"):
        status = state.get("Status", "not running")
        detail = f"{status}, exit code {state.get('ExitCode')}" if status == "exited" else status
        if state.get("Error"):
            detail += f": {state['Error']}"
        return False, f"container {container} is not running ({detail})"
    if state.get("Paused"):
        return False, f"container {container} is paused"
    health = state.get("Health")
    if not health:
        return True, f"container {container} is running (no healthcheck)"
    status = health.get("Status")
    if status == "healthy":
        return True, f"container {container} is running and healthy"
    if status == "starting":
        return False, f"container {container} is running but its healthcheck is still starting"
    log = health.get("Log") or []
    last = (log[-1].get("Output") or "").strip().splitlines() if log else []
    tail = f": {last[-1][:200]}" if last else ""
    return False, f"container {container} is {status or 'of unknown health'}{tail}"


def exited(info: dict) -> bool:
    """The inspect document of a container whose process has ended and that no restart
    policy is about to start again (Docker's "exited" or "dead")."""
    state = info.get("State") or {}
    return not state.get("Running") and state.get("Status") in ("exited", "dead")


class DockerProbe:
    """Checks a container through the Docker API of `url`, each call bounded by `timeout`."""

    def __init__(self, url: str, container: str, timeout: float, *, clock: Clock = time.monotonic):
        self.url = url
        self.container = container
        self.timeout = timeout
        self.clock = clock
        self.engine = EngineClient(url, timeout)
        self._write_probe: threading.Thread | None = None

    def _result(self, name: str, ok: bool, reason: str, t0: float) -> CheckResult:
        now = self.clock()
        return CheckResult(name, ok, reason, now - t0, now)

    def _inspect(self) -> tuple[dict | None, str]:
        try:
            info = self.engine.inspect(self.container)
        except EngineUnreachable as exc:
            return None, str(exc)
        except docker.errors.APIError as exc:
            return None, f"Docker engine at {self.url} refused to inspect {self.container}: {exc.explanation or exc}"
        if info is None:
            return None, f"container {self.container} does not exist on the Docker engine at {self.url}"
        return info, ""

    @check_name("container")
    def running(self) -> CheckResult:
        """Master check: the engine answers, the container exists and runs, and its
        healthcheck (if the image defines one) says healthy; "starting" is not yet."""
        t0 = self.clock()
        info, why = self._inspect()
        if info is None:
            return self._result("container", False, why, t0)
        ok, reason = describe_state(self.container, info)
        now = self.clock()
        return CheckResult("container", ok, reason, now - t0, now, final=not ok and exited(info))

    @check_name("standby")
    def can_serve(self, data_path: str | None, *, require_mount: bool = False) -> CheckResult:
        """Backup check: could this host take over now? The engine answers, the container
        exists, and `data_path` is a directory that accepts a write (create, fsync,
        remove) within `timeout`.

        A directory is enough by default, so that a plain local or bind-mounted path
        works; pass require_mount=True where the shared storage is its own mount, so an
        unmounted NFS mount point (an empty local directory) is refused instead of
        letting Milvus start on an empty database. Filesystem calls run in a helper
        thread because a hung NFS server blocks them in the kernel.
        """
        t0 = self.clock()
        info, why = self._inspect()
        if info is None:
            return self._result("standby", False, why, t0)
        if data_path is None:
            return self._result("standby", True, f"container {self.container} exists (no data path configured)", t0)
        ok, reason = self._storage(data_path, require_mount, max(0.0, self.timeout - (self.clock() - t0)))
        if ok:
            reason = f"container {self.container} exists and {reason}"
        return self._result("standby", ok, reason, t0)

    def _storage(self, path: str, require_mount: bool, budget: float) -> tuple[bool, str]:
        if self._write_probe is not None and self._write_probe.is_alive():
            return False, f"data path {path} is still blocked on an earlier write probe"
        box: list[tuple[bool, str]] = []
        worker = threading.Thread(target=lambda: box.append(_probe_storage(path, require_mount)),
                                  name="havip-storage-probe", daemon=True)
        self._write_probe = worker
        worker.start()
        worker.join(budget)
        if not box:
            return False, f"data path {path} did not accept a write within {fmt_seconds(round(budget, 2))}"
        return box[0]


def _probe_storage(path: str, require_mount: bool) -> tuple[bool, str]:
    if not os.path.exists(path):
        return False, f"data path {path} does not exist"
    if not os.path.isdir(path):
        return False, f"data path {path} is not a directory"
    mounted = os.path.ismount(path)
    if require_mount and not mounted:
        return False, f"data path {path} is not a mount point (is the shared storage mounted?)"
    probe = os.path.join(path, f".havip-probe-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"havip write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        what = "is read-only" if exc.errno == errno.EROFS else f"is not writable: {exc.strerror or exc}"
        return False, f"data path {path} {what}"
    kind = "a writable mount point" if mounted else "a writable directory (not a mount point)"
    return True, f"data path {path} is {kind}"


# ------------------------------------------------------------------ Milvus gRPC


class MilvusProbe:
    """Milvus' CheckHealth (havip.checks.milvus_grpc: HTTP/2 by hand, no pymilvus, no
    grpcio), one fresh connection per check, so nothing goes stale between checks."""

    def __init__(self, addr: str, timeout: float, *, clock: Clock = time.monotonic):
        self.addr = addr
        self.timeout = timeout
        self.clock = clock

    def reset(self) -> None:
        """Nothing to drop: every check connects afresh (kept for the probe interface)."""

    close = reset

    @check_name("grpc")
    def check(self, timeout: float | None = None) -> CheckResult:
        """CheckHealth with a deadline of `timeout` (default: the probe's)."""
        from havip.checks.milvus_grpc import check_health   # h2 and protobuf: only once a probe runs

        timeout = self.timeout if timeout is None else timeout
        t0 = self.clock()
        ok, reason = check_health(self.addr, timeout)
        now = self.clock()
        return CheckResult("grpc", ok, reason, now - t0, now)


# ------------------------------------------------------------------ storage lease


class LeaseProbe:
    """The master's proof that it still holds the storage lease (havip.runtime.lease): the
    record takes a write. An NFS client whose lock was lost while the storage was out of
    reach gets EIO here; a storage that hangs fails by the runner's deadline (`timeout`)."""

    def __init__(self, lease, timeout: float, clock: Clock = time.monotonic):
        self.lease = lease
        self.timeout = timeout
        self.clock = clock

    @check_name("lease")
    def check(self) -> CheckResult:
        t0 = self.clock()
        try:
            self.lease.renew()
            ok, reason = True, f"storage lease {self.lease.path} renewed"
        except HavipError as exc:
            ok, reason = False, str(exc)
        now = self.clock()
        return CheckResult("lease", ok, reason, now - t0, now)
