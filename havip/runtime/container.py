"""The Docker side effect: start, stop and watch the one Milvus container.

Every Docker call carries a timeout (`api_timeout`, plus `stop_timeout` for the stop
call that waits for the container). Failures the caller must act on raise
`AdapterError` with a sentence that names the container and the cause.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

import docker.errors

from havip.checks.probes import CheckResult, EngineClient, EngineUnreachable, MilvusProbe, describe_state
from havip.errors import AdapterError
from havip.fmt import fmt_seconds


class ContainerRuntime:
    """Start/stop the container `container` on the engine at `url`."""

    def __init__(self, url: str, container: str, stop_timeout: float, api_timeout: float = 10,
                 *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 after_start: Callable[[], object] | None = None):
        self.url = url
        self.container = container
        self.stop_timeout = stop_timeout
        self.api_timeout = api_timeout
        self.clock = clock
        self.sleep = sleep
        self.engine = EngineClient(url, api_timeout)
        # Run once Docker started our container (not when it already ran): the stale
        # session sweep (havip.runtime.sessions), which starts a bounded thread of its own.
        self.after_start = after_start

    # ---------------------------------------------------------------- helpers

    def _inspect(self, doing: str) -> dict | None:
        try:
            return self.engine.inspect(self.container)
        except EngineUnreachable as exc:
            raise AdapterError(f"cannot {doing} container {self.container}: {exc}") from exc
        except docker.errors.APIError as exc:
            raise AdapterError(f"cannot {doing} container {self.container}: "
                               f"Docker refused to inspect it: {exc.explanation or exc}") from exc

    def _call(self, doing: str, fn: Callable[[], object]) -> object:
        """fn() with Docker and transport errors turned into one AdapterError sentence."""
        try:
            return fn()
        except docker.errors.NotFound as exc:
            raise AdapterError(f"cannot {doing} container {self.container}: "
                               f"it does not exist on the Docker engine at {self.url}") from exc
        except docker.errors.APIError as exc:
            raise AdapterError(f"cannot {doing} container {self.container}: "
                               f"Docker refused: {exc.explanation or exc}") from exc
        except Exception as exc:  # noqa: BLE001 - transport failures
            self.engine.reset()
            raise AdapterError(f"cannot {doing} container {self.container}: {self.engine.describe(exc)}") from exc

    # ---------------------------------------------------------------- API

    def is_running(self) -> bool | None:
        """True/False from the engine; None if the engine cannot be asked."""
        try:
            info = self.engine.inspect(self.container)
        except (EngineUnreachable, docker.errors.APIError):
            return None
        return bool(info and (info.get("State") or {}).get("Running"))

    def start(self) -> None:
        """Start the container; nothing to do if it already runs."""
        info = self._inspect("start")
        if info is None:
            raise AdapterError(f"cannot start container {self.container}: "
                               f"it does not exist on the Docker engine at {self.url}")
        if (info.get("State") or {}).get("Running"):
            return
        self._call("start", lambda: self.engine.api().start(self.container))
        if self.after_start is not None:
            try:
                self.after_start()
            except Exception:  # noqa: BLE001 - a courtesy to Milvus; the start itself succeeded
                pass

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the container and confirm it is not running; True if it was running.

        `docker stop` sends the image's stop signal and kills after `stop_timeout`;
        a kill follows if it still runs, then the state is re-read until it shows
        not running. A container that does not exist is not running (False).
        Raises AdapterError if the engine cannot be asked or the container survives.
        """
        info = self._inspect("stop")
        if info is None or not (info.get("State") or {}).get("Running"):
            return False
        try:
            grace = self.stop_timeout if timeout is None else timeout
            self._call("stop", lambda: self.engine.api().stop(self.container, timeout=math.ceil(grace)))
        except AdapterError:
            pass  # the kill and the confirmation below decide
        if self._running_now():
            try:
                self._call("kill", lambda: self.engine.api().kill(self.container))
            except AdapterError:
                pass  # "is not running" races are fine; confirmation decides
        deadline = self.clock() + self.api_timeout
        while self._running_now():
            if self.clock() >= deadline:
                raise AdapterError(f"container {self.container} is still running after stop and kill "
                                   f"({fmt_seconds(self.stop_timeout)} grace)")
            self.sleep(0.05)
        return True

    def _running_now(self) -> bool:
        info = self._inspect("confirm the state of")
        return bool(info and (info.get("State") or {}).get("Running"))

    def wait_ready(self, probe: MilvusProbe, timeout: float, poll: float = 0.1,
                   cancel: threading.Event | None = None) -> CheckResult:
        """Poll `probe` until Milvus answers healthy, the container stops running, or
        `timeout` passes; the result says which. Each probe call is cut to the time left."""
        t0 = self.clock()
        deadline = t0 + timeout
        last = "Milvus was not asked"
        while True:
            if cancel is not None and cancel.is_set():
                return self._ready(False, "the start was cancelled: the container is to be stopped", t0)
            left = deadline - self.clock()
            if left <= 0:
                return self._ready(False, f"Milvus did not become healthy within {fmt_seconds(timeout)}: {last}", t0)
            res = probe.check(timeout=min(probe.timeout, left))
            # Healthy counts only while our container runs: anything else answering on
            # the port (a stray Milvus) must not pass for it.
            if res.ok and self.is_running() is not False:
                took = self.clock() - t0
                return self._ready(True, f"Milvus answered healthy {took:.1f}s after waiting began", t0)
            last = res.reason
            if self.is_running() is False:     # None (engine silent): keep polling Milvus
                return self._ready(False, self._exit_sentence(), t0)
            self.sleep(max(0.0, min(poll, deadline - self.clock())))

    def _exit_sentence(self) -> str:
        try:
            info = self.engine.inspect(self.container)
        except (EngineUnreachable, docker.errors.APIError):
            return f"container {self.container} stopped before Milvus became healthy"
        if info is None:
            return f"container {self.container} disappeared before Milvus became healthy"
        _, state = describe_state(self.container, info)
        state = state.replace(" is not running ", " stopped ", 1)
        tail = self._last_log_line()
        return f"{state} before Milvus became healthy" + (f"; last log line: {tail}" if tail else "")

    def _last_log_line(self) -> str:
        try:
            out = self.engine.api().logs(self.container, tail=20)
        except Exception:  # noqa: BLE001 - the log is a courtesy in the reason
            return ""
        lines = [ln.strip() for ln in out.decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""

    def _ready(self, ok: bool, reason: str, t0: float) -> CheckResult:
        now = self.clock()
        return CheckResult("ready", ok, reason, now - t0, now)
