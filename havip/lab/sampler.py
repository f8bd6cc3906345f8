"""The judge of the single-writer rule: which hosts run Milvus, every 50 ms.

A `Sampler` thread asks each host's Docker engine which containers run and records
every sample in which more than one host runs the Milvus container. The engines are
asked one after the other, so a sample spans a few milliseconds (`span` in each
overlap); a handover takes at least the new master's skew time (about 0.6 s), far
longer, so an overlap found here is a real one. It also keeps, per host, the times at
which the container started or stopped running as Docker saw them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import docker


class Sampler(threading.Thread):
    """Sample `lab`'s engines every `period` seconds until `stop()`."""

    def __init__(self, lab, period: float = 0.05, timeout: float = 0.5, container: str = "milvus"):
        super().__init__(name="sampler", daemon=True)
        self.urls = {name: d.url for name, d in lab.dockerds.items()}
        self.period = period
        self.timeout = timeout
        self.container = "/" + container
        self.samples = 0
        self.errors: Counter[str] = Counter()
        self.overlaps: list[dict] = []          # {"at": wall time, "hosts": [...], "span": s}
        self.running_by_host: dict[str, list[tuple[float, bool | None]]] = {n: [] for n in self.urls}
        self.max_interval = 0.0
        self._apis: dict[str, docker.APIClient | None] = dict.fromkeys(self.urls)
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def _api(self, name: str) -> docker.APIClient:
        if self._apis[name] is None:
            # A fixed API version: "auto" would cost a round trip per reconnect.
            self._apis[name] = docker.APIClient(base_url=self.urls[name], version="1.41", timeout=self.timeout)
        return self._apis[name]

    def _running(self, name: str) -> bool | None:
        try:
            listed = self._api(name).containers(filters={"status": "running"})
        except Exception as exc:  # noqa: BLE001 - an engine that does not answer is "unknown"
            self.errors[f"{name}: {type(exc).__name__}"] += 1
            api, self._apis[name] = self._apis[name], None
            if api is not None:
                api.close()
            return None
        return any(self.container in c.get("Names", ()) for c in listed)

    def sample(self) -> dict[str, bool | None]:
        """Take one sample now; record an overlap if more than one host runs Milvus."""
        t0 = time.time()
        now = {name: self._running(name) for name in self.urls}
        span = time.time() - t0
        with self._lock:
            self.samples += 1
            for name, running in now.items():
                timeline = self.running_by_host[name]
                if running is not None and (not timeline or timeline[-1][1] != running):
                    timeline.append((t0, running))
            both = [n for n, r in now.items() if r]
            if len(both) > 1:
                self.overlaps.append({"at": t0, "hosts": both, "span": round(span, 4)})
        return now

    def run(self) -> None:
        last = None
        while not self._stopping.is_set():
            began = time.monotonic()
            if last is not None:
                self.max_interval = max(self.max_interval, began - last)
            last = began
            self.sample()
            self._stopping.wait(max(0.0, self.period - (time.monotonic() - began)))

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(5)
        for name, api in self._apis.items():
            if api is not None:
                api.close()
            self._apis[name] = None

    def changes_since(self, t: float) -> dict[str, list[tuple[float, bool]]]:
        """Per host, the running/stopped changes Docker showed after wall time `t`."""
        with self._lock:
            return {n: [c for c in tl if c[0] >= t] for n, tl in self.running_by_host.items()}

    def summary(self) -> str:
        overl = f"{len(self.overlaps)} sample(s) with two Milvus running" if self.overlaps else \
            "never two Milvus running"
        errs = f", {sum(self.errors.values())} engine errors" if self.errors else ""
        return f"{self.samples} samples (longest interval {self.max_interval * 1000:.0f} ms): {overl}{errs}"
