"""Follow the Docker engine's events for the Milvus container, so that its death is
looked at now rather than at the next check round.

A killed or crashed container is otherwise seen by the container check at its next
round (`check_interval`, 1 s by default); the engine announces a `die` event the moment
the process ends. The watch only kicks the check runner (`CheckRunner.kick`): the
round's own inspect decides, so an event can make havip look sooner but never makes it
act on something the checks do not see. Without events (an engine that does not
answer, a stream that breaks) the checks run on their schedule as before; the watch
reconnects every `retry` seconds and says so at most once a minute, with a count.

The stream is read as the engine writes it, one JSON document a line, by the watch
itself: a line that is not an event is counted and skipped (docker-py's decoder stopped
at it for good), a line longer than MAX_LINE drops the stream (its decoder buffered it
without end). The engine's `container=` filter matches prefixes of names and IDs
(`milvus` is also `milvus-etcd`), and a proxy may ignore filters: only a die or oom of
this very container is a kick, the rest is counted as foreign.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable, Iterable, Iterator

import docker
import structlog

from havip.checks.probes import engine_failure
from havip.daemon.ratelimit import RateLimiter

log = structlog.get_logger("havip.checks")

EVENTS = ("die", "oom")          # the process ended; the kernel's OOM killer struck
SAY_EVERY = 60.0                 # s: a stream that keeps breaking is said once a minute, counted
MAX_LINE = 1 << 20               # bytes: an event is about 1 KiB (its labels included)


class StreamGarbage(Exception):
    """The event stream is not one; str() is what follows "Docker engine at URL" in the sentence."""


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
        self.events = 0                   # events of this container seen (status, tests)
        self.foreign = 0                  # events of another container or of another kind
        self.rejected = 0                 # lines that were not an event
        self.connected = False
        self.losses = 0                   # streams that broke or could not be opened
        self._clock = clock
        self._say = RateLimiter(SAY_EVERY, burst=2, max_keys=2)   # "lost", "rejected": once a minute each
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
                why = "ended its event stream"
            except StreamGarbage as exc:
                why = str(exc)
            except Exception as exc:  # noqa: BLE001 - any failure: the checks go on, retry later
                why = engine_failure(exc, self.timeout)
            self.connected = False
            self._close()
            if self._stopping.is_set():
                return
            self.losses += 1
            now = self._clock()
            if self._say.allow("lost", now):
                self._owe_back = True
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
        # Raw chunks: the lines are split and decoded here, bounded (see the module doc).
        stream = api.events(filters={"type": "container", "container": self.container, "event": list(EVENTS)},
                            decode=False)
        with self._lock:
            if self._stopping.is_set():
                stream.close()
                return
            self._stream = stream
        self.connected = True
        if not self._followed or self._owe_back:
            log.info("container_watch", container=self.container, events=list(EVENTS), again=self._owe_back or None)
        self._followed, self._owe_back = True, False
        for event in self._decode(self._lines(stream)):
            if self._stopping.is_set():
                return
            action = self._ours(event)
            if action is None:
                self.foreign += 1
                continue
            self.events += 1
            kick(f"container {self.container}: Docker event {action}")

    def _lines(self, chunks: Iterable[bytes | str]) -> Iterator[bytes]:
        """The lines of the stream; StreamGarbage when one grows past MAX_LINE."""
        buf = bytearray()
        for chunk in chunks:
            if self._stopping.is_set():
                return
            # A reply that is not chunked (not a stream at all) comes whole, as text.
            buf += chunk.encode("utf-8", "replace") if isinstance(chunk, str) else chunk
            while (end := buf.find(b"\n")) >= 0:
                line = bytes(buf[:end])
                del buf[:end + 1]
                yield line
            if len(buf) > MAX_LINE:
                raise StreamGarbage(f"sent more than {MAX_LINE} bytes without a line end on its event stream")
        if buf:
            yield bytes(buf)

    def _decode(self, lines: Iterable[bytes]) -> Iterator[dict]:
        """The events among `lines`; the rest is counted and said at most once a minute."""
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):    # not JSON, not UTF-8, nested beyond reason
                event = None
            if isinstance(event, dict):
                yield event
                continue
            self.rejected += 1
            now = self._clock()
            if self._say.allow("rejected", now):
                log.warning("container_watch_rejected", container=self.container, count=self.rejected,
                            reason=f"Docker engine at {self.url} sent a line that is not an event: "
                                   f"{line[:80].decode('utf-8', 'replace')!r}",
                            consequence="skipped; the checks decide as before")

    def _ours(self, event: dict) -> str | None:
        """The action (die, oom) if `event` is one of those of our container, else None."""
        action = event.get("Action") or event.get("status")
        if action not in EVENTS:
            return None
        actor = event.get("Actor") if isinstance(event.get("Actor"), dict) else {}
        attrs = actor.get("Attributes") if isinstance(actor.get("Attributes"), dict) else {}
        name, cid = attrs.get("name"), actor.get("ID") or event.get("id")
        if name is None and cid is None:
            return action                 # nothing to tell it by: look (the inspect decides)
        wanted = self.container.lstrip("/")
        if name == wanted or (isinstance(cid, str) and cid.startswith(wanted)):
            return action
        return None
