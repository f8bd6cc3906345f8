"""The lab's Milvus client: a long-lived process in the client namespace.

Run as `python -m havip.lab.milvus_worker URI`; it reads one JSON request per line on
stdin and answers with one JSON line on stdout, so the parent (`havip.lab.milvuslab.
Client`) can drive pymilvus from a namespace it cannot reach itself.

Every RPC has a deadline, and after any failure the connection is dropped and the next
request connects afresh: a gRPC channel that saw a refused connection backs off its
reconnects for seconds, which would hide when Milvus answers again through the VIP.

An insert is acknowledged only after `insert` and `flush` both succeeded. milvus-lite
already survives a process kill without the flush (its WAL is written through to the
page cache on every insert); the flush also writes the rows into a segment whose
manifest is fsync'ed, which is what survives a host crash. Ids are chosen by the
parent and never reused, so an unacknowledged batch that did land is simply extra.

`traffic` runs a background writer that inserts (and flushes, unless told not to) and
searches every `period` seconds and records each outcome: the client's view of a failover.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback

# The deadline of every data call; the lab sets it per Milvus kind (the real server's
# flush takes longer than milvus-lite's). Creating and loading a collection, done once
# before anything is measured, get ADMIN_TIMEOUT.
RPC_TIMEOUT = float(os.environ.get("HAVIP_LAB_RPC_TIMEOUT", "2.0"))
ID_WINDOW = 10_000              # ids per query of `ids`: below Milvus' 16,384-row query window
ADMIN_TIMEOUT = 60.0
# use_local_subchannel_pool: a new client after a failure gets a new TCP connection, not
# the one grpc-core would otherwise share between all channels to the VIP in this process
# (the writer's and the prober's), with that connection's reconnect backoff.
GRPC_OPTIONS = {"grpc.initial_reconnect_backoff_ms": 100, "grpc.min_reconnect_backoff_ms": 100,
                "grpc.max_reconnect_backoff_ms": 500, "grpc.use_local_subchannel_pool": 1}


def _vec(i: int, dim: int) -> list[float]:
    return [float((i * 31 + k) % 97) / 97.0 for k in range(dim)]


class Session:
    """One connection to Milvus at `uri`, made on demand and dropped on failure."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client = None
        self.collection = "havip_lab"
        self.dim = 8

    def conn(self):
        if self.client is None:
            from pymilvus import MilvusClient

            # dedicated: a fresh channel of our own, not pymilvus' shared one.
            # Short reconnect backoff: gRPC's default (1 s, growing) would add up to a
            # second to every outage measured here, on top of havip's own time.
            client = MilvusClient(uri=self.uri, timeout=RPC_TIMEOUT, dedicated=True, grpc_options=GRPC_OPTIONS)
            try:
                # A restarted milvus-lite has every collection released (real Milvus
                # reloads them itself): load ours on every new connection.
                if client.has_collection(self.collection, timeout=RPC_TIMEOUT):
                    client.load_collection(self.collection, timeout=RPC_TIMEOUT)
            except Exception:
                client.close()
                raise
            self.client = client
        return self.client

    def reset(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - the connection is being thrown away
                pass

    def call(self, fn):
        try:
            return fn(self.conn())
        except Exception:
            self.reset()
            raise

    # ---------------------------------------------------------------- operations

    def create(self, collection: str, dim: int) -> dict:
        self.collection, self.dim = collection, dim

        def go(c):
            if not c.has_collection(collection, timeout=ADMIN_TIMEOUT):
                c.create_collection(collection, dimension=dim, metric_type="L2", timeout=ADMIN_TIMEOUT)
            c.load_collection(collection, timeout=ADMIN_TIMEOUT)
        self.call(go)
        return {}

    def use(self, collection: str, dim: int) -> dict:
        self.collection, self.dim = collection, dim
        return {}

    def insert(self, start: int, n: int, flush: bool = True) -> dict:
        rows = [{"id": i, "vector": _vec(i, self.dim)} for i in range(start, start + n)]

        def go(c):
            c.insert(self.collection, rows, timeout=RPC_TIMEOUT)
            if flush:
                c.flush(self.collection, timeout=RPC_TIMEOUT)
        self.call(go)
        return {"start": start, "n": n}

    def ids(self, upto: int | None = None) -> dict:
        """Every id in the collection. One query returns at most 16,384 rows (Milvus' query
        window), so with `upto` (ids are below it) the ids are read in windows of 10,000
        ids, each complete; without it, a collection of more rows is read short."""
        def go(c):
            c.load_collection(self.collection, timeout=RPC_TIMEOUT)
            # Strong: every acknowledged write, not the collection's default Bounded view
            # (which may lag a few seconds and would report rows as missing).
            filters = ["id >= 0"] if upto is None else \
                [f"id >= {lo} and id < {lo + ID_WINDOW}" for lo in range(0, max(upto, 1), ID_WINDOW)]
            out = []
            for f in filters:
                res = c.query(self.collection, filter=f, output_fields=["id"], limit=16384,
                              consistency_level="Strong", timeout=RPC_TIMEOUT)
                out += (r["id"] for r in res)
            return sorted(out)
        return {"ids": self.call(go)}

    def count(self) -> dict:
        def go(c):
            res = c.query(self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong",
                          timeout=RPC_TIMEOUT)
            return res[0]["count(*)"]
        return {"count": self.call(go)}

    def search(self) -> dict:
        def go(c):
            res = c.search(self.collection, data=[_vec(7, self.dim)], limit=3, timeout=RPC_TIMEOUT)
            return [h["id"] for h in res[0]]
        return {"hits": self.call(go)}

    def wait_reachable(self, timeout: float) -> dict:
        """Search until one succeeds; the wall-clock time of that first success."""
        deadline = time.monotonic() + timeout
        attempts, last = 0, ""
        while time.monotonic() < deadline:
            attempts += 1
            try:
                hits = self.search()["hits"]
                return {"at": time.time(), "attempts": attempts, "hits": hits}
            except Exception as exc:  # noqa: BLE001 - every failure is a retry here
                last = _short(exc)
                time.sleep(0.05)
        raise TimeoutError(f"no successful search within {timeout}s ({attempts} attempts; last: {last})")


class Traffic(threading.Thread):
    """Insert a batch (new ids from `next_id`) and search, every `period` seconds."""

    def __init__(self, uri: str, collection: str, dim: int, next_id: int, batch: int, period: float,
                 flush: bool = True):
        super().__init__(name="traffic", daemon=True)
        self.session = Session(uri)
        self.session.use(collection, dim)
        self.next_id, self.batch, self.period, self.flush = next_id, batch, period, flush
        self.acked: list[list] = []       # [first id, count, wall time of the acknowledgement]
        self.events: list[list] = []      # [wall time, ok, error or ""] on every change
        self.ops = self.failures = 0
        self.stopping = threading.Event()

    def _record(self, ok: bool, error: str = "") -> None:
        if not self.events or self.events[-1][1] != ok:
            self.events.append([time.time(), ok, error])

    def run(self) -> None:
        while not self.stopping.is_set():
            start = self.next_id
            self.next_id += self.batch      # never reused, acknowledged or not
            self.ops += 1
            try:
                self.session.insert(start, self.batch, self.flush)
                self.acked.append([start, self.batch, time.time()])
                self.session.search()
                self._record(True)
            except Exception as exc:  # noqa: BLE001 - an outage is what we measure
                self.failures += 1
                self._record(False, _short(exc))
                self.stopping.wait(0.05)
                continue
            self.stopping.wait(self.period)

    def report(self) -> dict:
        return {"acked": self.acked, "events": self.events, "next_id": self.next_id,
                "ops": self.ops, "failures": self.failures}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def serve(uri: str) -> None:
    session = Session(uri)
    traffic: Traffic | None = None
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        op, seq = req.pop("op"), req.pop("seq", None)
        try:
            if op == "traffic_start":
                traffic = Traffic(uri, session.collection, session.dim, **req)
                traffic.start()
                out = {}
            elif op == "traffic_stop":
                traffic.stopping.set()
                traffic.join(RPC_TIMEOUT * 3)
                out = traffic.report()
            elif op == "traffic_report":
                out = traffic.report()
            else:
                out = getattr(session, op)(**req)
            reply = {"ok": True, **out}
        except Exception as exc:  # noqa: BLE001 - the parent decides what a failure means
            reply = {"ok": False, "error": _short(exc), "type": type(exc).__name__}
            print(traceback.format_exc(), file=sys.stderr, flush=True)
        print(json.dumps({"seq": seq, **reply}), flush=True)


if __name__ == "__main__":
    serve(sys.argv[1])
