"""The read-pool lab's pymilvus client (lab, tests and benchmarks only; never the daemon).

Run in the client namespace as `python -m havip.lab.pool_client OP JSON`; prints one
JSON line. Ops:

- `seed {"uris": [...], "rows": N}`: wait for each node, create the collection, insert
  the same N rows, flush and load: every read node holds the same data;
- `searches {"uri": U, "n": N, "threads": T, "timeout": S, "go_file": F}`: N searches
  through U from T threads (each with its own connection), after F exists if given;
  per-search latency, every error, and when it ran;
- `insert {"uri": U, "start": I, "n": N}` and `count {"uri": U}`: writes and a row count
  (count(*) after a flush: what a node holds);
- `load {"uri": U}`: load the collection (a restarted milvus-lite has it released);
- `compare {"uris": {NAME: U}, "n": N, "rounds": R}`: N searches through each U from one
  thread, in R slices taken round robin over the URIs (one connection each, all opened
  first): the machine's background load falls on every path alike.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

COLLECTION, DIM = "havip_pool", 8
# grpc-core shares one TCP connection between channels to the same target unless each
# channel has its own subchannel pool: without it, N "dedicated" clients are one
# connection (through the recipe's TCP proxy: one member for all of them).
GRPC_OPTIONS = {"grpc.initial_reconnect_backoff_ms": 100, "grpc.min_reconnect_backoff_ms": 100,
                "grpc.max_reconnect_backoff_ms": 500, "grpc.use_local_subchannel_pool": 1}


def vec(i: int) -> list[float]:
    return [float((i * 31 + k) % 97) / 97.0 for k in range(DIM)]


def client(uri: str, timeout: float = 5.0):
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, timeout=timeout, dedicated=True, grpc_options=GRPC_OPTIONS)


def _connect(uri: str, deadline: float):
    last = None
    while time.monotonic() < deadline:
        try:
            return client(uri)
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"{uri} did not answer: {last}")


def seed(uris: list[str], rows: int = 1000, wait: float = 90) -> dict:
    deadline = time.monotonic() + wait
    for uri in uris:
        c = _connect(uri, deadline)
        if not c.has_collection(COLLECTION):
            c.create_collection(COLLECTION, dimension=DIM, metric_type="L2")
            c.insert(COLLECTION, [{"id": i, "vector": vec(i)} for i in range(rows)])
            c.flush(COLLECTION)
        c.load_collection(COLLECTION)
        c.close()
    return {"seeded": uris}


def load(uri: str, within: float = 60) -> dict:
    """Load the collection, each attempt on a fresh connection with a 10 s deadline: a
    milvus-lite restarted after a SIGKILL sometimes leaves the first call unanswered."""
    deadline = time.monotonic() + within
    attempts, last = 0, ""
    while time.monotonic() < deadline:
        attempts += 1
        try:
            c = _connect(uri, deadline)
            try:
                c.load_collection(COLLECTION, timeout=10)
            finally:
                c.close()
            return {"attempts": attempts}
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = describe(exc)
            print(f"load {uri}: attempt {attempts}: {last}", file=sys.stderr, flush=True)
            time.sleep(0.5)
    raise TimeoutError(f"{uri}: collection not loaded within {within}s ({attempts} attempts; last: {last})")


def insert(uri: str, start: int, n: int) -> dict:
    c = client(uri)
    c.insert(COLLECTION, [{"id": i, "vector": vec(i)} for i in range(start, start + n)])
    c.flush(COLLECTION)
    c.close()
    return {"inserted": n}


def count(uri: str) -> dict:
    c = client(uri)
    res = c.query(COLLECTION, filter="", output_fields=["count(*)"])
    c.close()
    return {"count": res[0]["count(*)"]}


def searches(uri: str, n: int, threads: int = 1, timeout: float = 5.0, go_file: str | None = None,
             retries: bool = True) -> dict:
    """`retries=False`: pymilvus' own retry off (retry_times=0, and no deadline, which
    pymilvus would turn into a retry budget), so every failed RPC counts: only for paths
    that bound every call themselves (havip's pool: nginx's read timeout)."""
    conns = [client(uri, timeout) for _ in range(threads)]
    for c in conns:
        c.search(COLLECTION, data=[vec(1)], limit=3)        # warm: connection and schema cache
    if go_file:
        while not os.path.exists(go_file):
            time.sleep(0.01)
    lat: list[float] = []
    errors: list[list] = []
    lock = threading.Lock()
    left = [n]

    def worker(c, k: int) -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
                i = left[0]
            t0 = time.perf_counter()
            try:
                if retries:
                    c.search(COLLECTION, data=[vec(i + k)], limit=3, timeout=timeout)
                else:
                    c.search(COLLECTION, data=[vec(i + k)], limit=3, retry_times=0)
                ok, err = True, ""
            except Exception as exc:  # noqa: BLE001 - a failed search is what we count
                ok, err = False, describe(exc)
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    errors.append([time.time(), err])
    began = time.time()
    ts = [threading.Thread(target=worker, args=(c, k)) for k, c in enumerate(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ended = time.time()
    for c in conns:
        c.close()
    return {"ok": len(lat), "failed": len(errors), "errors": errors[:20], "latencies": lat,
            "began": began, "ended": ended}


def compare(uris: dict[str, str], n: int, rounds: int = 10, timeout: float = 5.0) -> dict:
    conns = {k: client(u, timeout) for k, u in uris.items()}
    for c in conns.values():
        for _ in range(20):
            c.search(COLLECTION, data=[vec(1)], limit=3)        # warm
    lat: dict[str, list[float]] = {k: [] for k in uris}
    failed = dict.fromkeys(uris, 0)
    for r in range(rounds):
        for k, c in conns.items():
            for i in range(n // rounds):
                t0 = time.perf_counter()
                try:
                    c.search(COLLECTION, data=[vec(i + r)], limit=3, timeout=timeout)
                    lat[k].append(time.perf_counter() - t0)
                except Exception:  # noqa: BLE001 - counted
                    failed[k] += 1
    for c in conns.values():
        c.close()
    return {"latencies": lat, "failed": failed}


def describe(exc: BaseException) -> str:
    """One line: the gRPC status and message when there is one."""
    code = getattr(exc, "code", None)
    if callable(code) and callable(getattr(exc, "details", None)):
        return f"{code().name}: {exc.details()}"[:200]
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def main() -> None:
    op, args = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    out = {"seed": seed, "searches": searches, "insert": insert, "count": count, "load": load, "compare": compare}[op](**args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
