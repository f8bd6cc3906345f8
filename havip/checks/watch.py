"""Follow the Docker engine's events for the Milvus container, so that its death is
looked at now rather than at the next check round.

A killed or crashed container is otherwise seen by the container check at its next
round (`check_interval`, 1 s by default); the engine announces a `die` event the moment
the process ends. The watch only kicks the check runner (`CheckRunner.kick`): the
round's own inspect decides, so an event can make havip look sooner but never makes it
act on something the checks do not see. Without events (an engine that does not
answer, a stream that breaks) the checks run on their schedule as before; the watch
reconnects every `retry` seconds and says so at most once a minute, with a count.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import docker
import structlog

from havip.checks.probes import engine_failure

log = structlog.get_logger("havip.checks")

EVENTS = ("die", "oom")          # the process ended; the kernel's OOM killer struck
SAY_EVERY = 60.0                 # s: a stream that keeps breaking is said once a minute, counted


class ContainerWatch:
    """A thread reading `GET /events` for one container; `kick(reason)` per event."""

    def __init__(self, url: str, container: str, timeout: float, *, retry: float = 1.0,
                 client: Callable[[], docker.APIClient] | None = None, clock: Callable[[], float] = time.monotonic):
        self.url = url
        self.container = container
        self.timeout = timeout            # for the API version query; the stream itself has none
        self.retry = retry
        self._client = client or (lambda: docker.APIClient(base_url=url, version="auto", timeout=timeout))
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stream = None
        self._api: docker.APIClient | None = None
        self._thread: threading.Thread | None = None
        self.events = 0                   # events seen (status, tests)
        self.connected = False
        self.losses = 0                   # streams that broke or could not be opened
        self._clock = clock
        self._said: float | None = None   # when a loss was last said (at most every SAY_EVERY s)
        self._owe_back = False            # say when the stream is back after a loss that was said
        self._followed = False

    def start(self, kick: Callable[[str], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(kick,), name="havip-container-watch",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the stream (closing its socket unblocks the read) and the thread."""
        self._stopping.set()
        self._close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _close(self) -> None:
        with self._lock:
            stream, api = self._stream, self._api
            self._stream = self._api = None
        for thing in (stream, api):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - already broken is as good as closed
                    pass

    def _run(self, kick: Callable[[str], None]) -> None:
        while not self._stopping.is_set():
            try:
                self._follow(kick)
                why = "its event stream ended"
            except Exception as exc:  # noqa: BLE001 - any failure: the checks go on, retry later
                why = engine_failure(exc, self.timeout)
            self.connected = False
            self._close()
            if self._stopping.is_set():
                return
            self.losses += 1
            now = self._clock()
            if self._said is None or now - self._said >= SAY_EVERY:
                self._said, self._owe_back = now, True
                log.warning("container_watch_lost", container=self.container,
                            reason=f"Docker engine at {self.url} {why}", retry_every=self.retry,
                            losses=self.losses, note="the checks run on their schedule meanwhile")
            self._stopping.wait(self.retry)

    def _follow(self, kick: Callable[[str], None]) -> None:
        api = self._client()
        with self._lock:
            if self._stopping.is_set():
                api.close()
                return
            self._api = api
        stream = api.events(filters={"type": "container", "container": self.container, "event": list(EVENTS)},
                            decode=True)
        with self._lock:
            if self._stopping.is_set():
                stream.close()
                return
            self._stream = stream
        self.connected = True
        if self._said is None and not self._followed or self._owe_back:
            log.info("container_watch", container=self.container, events=list(EVENTS), again=self._owe_back or None)
        self._followed, self._owe_back = True, False
        for event in stream:
            if self._stopping.is_set():
                return
            if not isinstance(event, dict):
                continue
            action = str(event.get("Action") or event.get("status") or "?")[:40]
            self.events += 1
            kick(f"container {self.container}: Docker event {action}")
