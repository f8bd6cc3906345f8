"""What `havipctl pool status` shows, and the pool's Prometheus metrics.

The daemon writes its status as JSON to `status_file` (default /run/havip/INSTANCE.json)
every second; `havipctl pool status` reads it, so it works without a control socket and
without importing the daemon. A file older than `STALE` seconds, or whose pid is gone,
means the pool is not running.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

EXIT_OK, EXIT_DEGRADED, EXIT_NOT_RUNNING, EXIT_UNKNOWN = 0, 1, 3, 4
STALE = 10.0


class NotRunning(Exception):
    pass


def read(path: str | Path, *, now: float | None = None) -> dict:
    """The status the daemon wrote; raises NotRunning with a sentence when there is none."""
    path = Path(path)
    try:
        st = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotRunning(f"the read pool is not running: no status file {path}") from None
    except (OSError, ValueError) as exc:
        raise NotRunning(f"cannot read the pool status {path}: {exc}") from None
    pid = st.get("pid")
    if isinstance(pid, int) and not Path(f"/proc/{pid}").exists():
        raise NotRunning(f"the read pool is not running: pid {pid} in {path} is gone")
    age = (time.time() if now is None else now) - float(st.get("updated") or 0)
    if age > STALE:
        raise NotRunning(f"the read pool is not answering: {path} was last written {age:.0f}s ago")
    return st


def exit_code(st: dict) -> int:
    """0 every member in the pool and nginx in sync, 1 degraded, 4 unknown."""
    members = st.get("members") or []
    if not members:
        return EXIT_UNKNOWN
    if any(m.get("healthy") is not True for m in members) or not (st.get("nginx") or {}).get("in_sync"):
        return EXIT_DEGRADED
    return EXIT_OK


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m}m" if h else f"{m}m {s}s"


def _columns(rows: list[list[str]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def render(st: dict) -> str:
    """The status as a short table for people."""
    ng = st.get("nginx") or {}
    healthy = st.get("healthy_members", 0)
    total = len(st.get("members") or [])
    sync = "in sync" if ng.get("in_sync") else "NOT in sync with the checks"
    lines = _columns([
        ["instance", str(st.get("instance"))],
        ["listen", f"{st.get('listen')} (reads: {', '.join(st.get('read_methods') or [])})"],
        ["pool", f"{healthy}/{total} read nodes healthy; fallback: {st.get('fallback')}"],
        ["writer", f"{(st.get('writer') or {}).get('address')}, {(st.get('writer') or {}).get('requests', 0)} "
                   "requests routed"],
        ["nginx", f"pid {ng.get('pid')}, {sync}, {ng.get('applies', 0)} configs applied, "
                  f"{ng.get('render_errors', 0)} refused"],
    ])
    if ng.get("last_error"):
        lines.append(f"last error  {ng['last_error']}")
    if st.get("answered_unavailable"):
        lines.append(f"unavailable {st['answered_unavailable']} reads answered UNAVAILABLE (no healthy member)")
    table = [["MEMBER", "STATE", "SINCE", "REQUESTS", "RETRIED", "CHECK", "REASON"]]
    for m in st.get("members") or []:
        state = {True: "in", False: "OUT", None: "unknown"}[m.get("healthy")]
        lat = m.get("latency")
        table.append([m["address"], state, _dur(m.get("since_seconds")), str(m.get("requests", 0)),
                      str(m.get("retried_elsewhere", 0)), "-" if lat is None else f"{lat * 1000:.0f}ms",
                      str(m.get("reason"))])
    return "\n".join(lines + [""] + _columns(table))


class PoolMetrics:
    """Per-member Prometheus metrics, in a private registry (no global state)."""

    def __init__(self, instance: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        r = self.registry = CollectorRegistry()
        self.up = Gauge("havip_pool_member_up", "1 when the member is in the pool", ["instance", "member"],
                        registry=r)
        self.check_ok = Gauge("havip_pool_member_check_ok", "Last check of the member (1 passed, 0 failed)",
                              ["instance", "member"], registry=r)
        self.latency = Gauge("havip_pool_member_check_latency_seconds", "Duration of the member's last check",
                             ["instance", "member"], registry=r)
        self.changes = Counter("havip_pool_member_transitions", "Times the member joined or left the pool",
                               ["instance", "member", "to"], registry=r)
        self.requests = Gauge("havip_pool_member_requests", "Requests the member answered (from the access log, "
                              "since the pool started)", ["instance", "member"], registry=r)
        self.retried = Gauge("havip_pool_member_retried", "Reads the member failed that were retried on another",
                             ["instance", "member"], registry=r)
        self.writer_requests = Gauge("havip_pool_writer_requests", "Requests routed to the writer",
                                     ["instance"], registry=r)
        self.unavailable = Gauge("havip_pool_unavailable_answers", "Reads answered UNAVAILABLE (no member)",
                                 ["instance"], registry=r)
        self.reloads = Counter("havip_pool_nginx_applies", "Configs applied to nginx, by result",
                               ["instance", "result"], registry=r)
        self.instance = instance
        self._server = None

    def check(self, member: str, result) -> None:
        self.check_ok.labels(self.instance, member).set(1 if result.ok else 0)
        self.latency.labels(self.instance, member).set(result.latency)

    def transition(self, member: str, healthy: bool | None) -> None:
        self.changes.labels(self.instance, member, "in" if healthy else "out").inc()

    def reload(self, result: str) -> None:
        self.reloads.labels(self.instance, result).inc()

    def observe(self, st: dict) -> None:
        for m in st["members"]:
            self.up.labels(self.instance, m["address"]).set(1 if m["healthy"] else 0)
            self.requests.labels(self.instance, m["address"]).set(m["requests"])
            self.retried.labels(self.instance, m["address"]).set(m["retried_elsewhere"])
        self.writer_requests.labels(self.instance).set(st["writer"]["requests"])
        self.unavailable.labels(self.instance).set(st["answered_unavailable"])

    def serve(self, listen: str) -> None:
        from prometheus_client import start_http_server

        from havip.pool.config import split

        host, port = split(listen)
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

