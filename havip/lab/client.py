"""Drive the lab's pymilvus client (havip.lab.milvus_worker) from outside its namespace.

`Client` keeps the set of acknowledged row ids: a batch counts only once the worker
said its insert and its flush (unless told to skip the flush) both succeeded.
`missing()` is then the question every failover test asks: which acknowledged rows
can Milvus, reached through the VIP, not find?
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from havip.lab.netns import Host


class ClientError(RuntimeError):
    """The worker answered a request with a failure."""


class Client:
    """A long-lived pymilvus process in `host`, speaking line-JSON."""

    def __init__(self, host: Host, uri: str, log_path: Path, *, collection: str = "havip_lab", dim: int = 8,
                 rpc_timeout: float = 2.0):
        self.uri = uri
        self.collection = collection
        self.dim = dim
        self.next_id = 0
        self.acked: set[int] = set()
        self._log = open(log_path, "ab")
        self.proc = host.popen([sys.executable, "-m", "havip.lab.milvus_worker", uri],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                               env={**os.environ, "HAVIP_LAB_RPC_TIMEOUT": str(rpc_timeout)})
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seq = 0
        threading.Thread(target=self._read, name="client-reader", daemon=True).start()
        self.request("use", collection=collection, dim=dim)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def request(self, op: str, *, wait: float = 30, check: bool = True, **args) -> dict:
        """Send one request and wait for its answer; ClientError if it failed and `check`."""
        self._seq += 1
        self.proc.stdin.write(json.dumps({"op": op, "seq": self._seq, **args}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + wait
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"client: no answer to {op} within {wait}s") from None
            if line is None:
                raise ClientError(f"client process exited ({self.proc.poll()}) during {op}")
            reply = json.loads(line)
            if reply.get("seq") == self._seq:      # skip the late answer to an abandoned request
                break
        if check and not reply["ok"]:
            raise ClientError(f"{op} failed: {reply['error']}")
        return reply

    # ---------------------------------------------------------------- operations

    def create(self) -> None:
        self.request("create", wait=150, collection=self.collection, dim=self.dim)

    def insert(self, n: int, flush: bool = True) -> range:
        """Insert `n` new rows (fresh ids) and flush; the ids once acknowledged."""
        ids = range(self.next_id, self.next_id + n)
        self.next_id += n                   # never reused, whatever the outcome
        self.request("insert", start=ids.start, n=n, flush=flush)
        self.acked.update(ids)
        return ids

    def count(self) -> int:
        return self.request("count")["count"]

    def ids(self, wait: float = 30) -> list[int]:
        """Every id in the collection (read in windows: complete past 16,384 rows)."""
        return self.request("ids", wait=wait, upto=self.next_id)["ids"]

    def search(self) -> list[int]:
        return self.request("search")["hits"]

    def wait_reachable(self, timeout: float = 60) -> float:
        """Search until one succeeds; the wall-clock time of the first success."""
        return self.request("wait_reachable", wait=timeout + 10, timeout=timeout)["at"]

    def missing(self) -> list[int]:
        """Acknowledged ids that Milvus does not return (sorted)."""
        present = set(self.ids())
        return sorted(self.acked - present)

    # ---------------------------------------------------------------- background traffic

    def traffic_start(self, batch: int = 10, period: float = 0.2, flush: bool = True) -> None:
        """Insert `batch` rows (then flush) and search every `period` seconds in the background."""
        self.request("traffic_start", next_id=self.next_id, batch=batch, period=period, flush=flush)

    def traffic_sync(self) -> dict:
        """The background writer's report so far; its acknowledged rows join `acked`."""
        return self._merge(self.request("traffic_report"))

    def traffic_stop(self) -> dict:
        """Stop the background writer; its acknowledged rows join `acked`. The report
        has `events`: [wall time, ok, error] at every change between success and failure."""
        return self._merge(self.request("traffic_stop"))

    def _merge(self, rep: dict) -> dict:
        for start, n, *_ in rep["acked"]:
            self.acked.update(range(start, start + n))
        self.next_id = max(self.next_id, rep["next_id"])
        return rep

    @staticmethod
    def recovered_at(report: dict, since: float) -> float | None:
        """From a traffic report: when the first outage after wall time `since` ended
        (the first success after a failure), or None if it had not."""
        down = False
        for at, ok, _ in report["events"]:
            if at < since:
                continue
            if not ok:
                down = True
            elif down:
                return at
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
