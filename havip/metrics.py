"""Prometheus metrics (prometheus-client), off unless `metrics.listen` is set.

Each `Metrics` owns its registry: no global state, so tests and several instances in
one process do not collide. Two kinds of updates:

- counters and the state are pushed as things happen: the loop calls `transition()`
  and `drops.labels(reason=...).inc()`, the executor `adverts_sent.inc()`;
- everything that is a snapshot (priority, checks, VIP, pause, container timings) is
  read from the daemon's status dict just before each scrape (`serve(refresh=...)` calls
  `observe(status)`), so a scrape never shows a value older than the scrape itself and
  the loop pays nothing between scrapes.

The endpoint has no authentication; `serve` refuses a non-loopback address unless
`allow_remote=True`.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Info, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from havip.errors import AdapterError, ConfigError
from havip.model import State

MAX_SCRAPES = 8         # connections served at once (a scraper needs one)
SCRAPE_TIMEOUT = 5.0    # seconds a connection may stay silent before it is closed

STATES = [s.value for s in State]


class Metrics:
    """The havip metric set, in a private CollectorRegistry (`self.registry`)."""

    def __init__(self, info: dict[str, str] | None = None):
        r = self.registry = CollectorRegistry()
        self.info = Info("havip_instance", "Static facts about this havip instance", registry=r)
        if info:
            self.info.info({k: str(v) for k, v in info.items()})
        self.state = Enum("havip_state", "Current VRRP state", states=STATES, registry=r)
        self.state.state(State.INIT.value)
        self.priority = Gauge("havip_effective_priority", "Priority this host advertises now", registry=r)
        self.configured_priority = Gauge("havip_configured_priority", "Priority from the config", registry=r)
        self.transitions = Counter("havip_transitions", "State transitions", ["from", "to"], registry=r)
        self.adverts_sent = Counter("havip_adverts_sent", "VRRP advertisements sent", registry=r)
        self.adverts_received = Counter("havip_adverts_received", "VRRP packets received (before checks)",
                                        registry=r)
        self.drops = Counter("havip_drops", "Received packets dropped, by reason", ["reason"], registry=r)
        self.input_errors = Counter("havip_input_errors", "Inputs whose handling raised (a bug; the loop went "
                                    "on), by input: advert, beacon, control", ["input"], registry=r)
        self.beacon_drops = Counter("havip_beacon_drops", "Peer beacons dropped, by reason", ["reason"], registry=r)
        self.check_ok = Gauge("havip_check_ok", "Last result of each check (1 ok, 0 failed)", ["check"],
                              registry=r)
        self.check_latency = Gauge("havip_check_latency_seconds", "Duration of the last run of each check",
                                   ["check"], registry=r)
        self.healthy = Gauge("havip_healthy", "Aggregate check verdict (1 healthy, 0 not, -1 unknown)",
                             registry=r)
        self.vip_attached = Gauge("havip_vip_attached", "1 when this host holds the virtual addresses",
                                  registry=r)
        self.lease_held = Gauge("havip_lease_held", "Storage lease: 1 held by this host, 0 not, "
                                "-1 no lease configured", registry=r)
        self.lease_info = Gauge("havip_lease_info", "The lease as this host sees it (always 1): backend, key or "
                                "path, holder, etcd lease id", ["backend", "key", "holder", "lease_id"], registry=r)
        self.lease_ttl_left = Gauge("havip_lease_ttl_left_seconds", "etcd lease: seconds its expiry is proven for "
                                    "(fencing starts at fence_margin); -1 not held or no TTL", registry=r)
        self.paused = Gauge("havip_paused", "1 in maintenance mode (no automatic transitions)", registry=r)
        self.container_start = Gauge("havip_container_start_seconds",
                                     "Last container start, until Milvus answered healthy", registry=r)
        self.container_stop = Gauge("havip_container_stop_seconds", "Last container stop", registry=r)
        self.last_failover = Gauge("havip_last_failover_seconds",
                                   "Duration of the last planned switchover requested on this host", registry=r)
        self.session_sweeps = Counter("havip_session_sweeps", "Sweeps of the stale Milvus sessions after a start "
                                      "of ours, by outcome (cleared, none_stale, refused, gave_up, failed)",
                                      ["outcome"], registry=r)
        self.sessions_revoked = Counter("havip_sessions_revoked", "Stale Milvus sessions whose leases havip revoked",
                                        registry=r)
        self.status_errors = Counter("havip_status_errors", "Scrapes for which the loop gave no status in time",
                                     registry=r)
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.refused = 0            # connections closed unserved: MAX_SCRAPES were being served

    # ------------------------------------------------------------------ pushed by the daemon

    def transition(self, old: str, new: str) -> None:
        """One state change (`old` -> `new`, State or str)."""
        self.transitions.labels(**{"from": str(old), "to": str(new)}).inc()
        self.state.state(str(new))

    def check_result(self, name: str, ok: bool, latency: float) -> None:
        self.check_ok.labels(check=name).set(1 if ok else 0)
        self.check_latency.labels(check=name).set(latency)

    def container_started(self, seconds: float) -> None:
        self.container_start.set(seconds)

    def container_stopped(self, seconds: float) -> None:
        self.container_stop.set(seconds)

    def session_sweep(self, outcome: str, revoked: int) -> None:
        self.session_sweeps.labels(outcome=outcome).inc()
        self.sessions_revoked.inc(revoked)

    def failover_done(self, seconds: float) -> None:
        self.last_failover.set(seconds)

    # ------------------------------------------------------------------ pulled at scrape time

    def observe(self, status: dict) -> None:
        """Set every snapshot gauge from a `Daemon.status()` dict (missing keys are skipped)."""
        if status.get("state") in STATES:
            self.state.state(status["state"])
        prio = status.get("priority") or {}
        if "effective" in prio:
            self.priority.set(prio["effective"])
        if "configured" in prio:
            self.configured_priority.set(prio["configured"])
        for check in status.get("checks") or []:
            self.check_result(check["name"], bool(check["ok"]), float(check.get("latency") or 0.0))
        if "healthy" in status:
            self.healthy.set(-1 if status["healthy"] is None else int(bool(status["healthy"])))
        if "vip_attached" in status:
            self.vip_attached.set(int(bool(status["vip_attached"])))
        if "paused" in status:
            self.paused.set(int(bool(status["paused"])))
        if "lease" in status:
            lease = status["lease"]
            self.lease_held.set(-1 if lease is None else int(bool(lease.get("held_here"))))
            self.lease_ttl_left.set(-1 if not lease or lease.get("ttl_left") is None else lease["ttl_left"])
            self.lease_info.clear()
            if lease:
                self.lease_info.labels(lease.get("backend") or "file", str(lease.get("key") or lease.get("path")),
                                       str(lease.get("holder") or ""), str(lease.get("lease_id") or "")).set(1)
        timings = status.get("container_timings") or {}
        if "start" in timings:
            self.container_started(timings["start"] + timings.get("ready", 0.0))
        if "stop" in timings:
            self.container_stopped(timings["stop"])

    # ------------------------------------------------------------------ exposition

    def serve(self, listen: str, *, refresh: Callable[[], dict] | None = None,
              allow_remote: bool = False) -> tuple[str, int]:
        """Serve /metrics on `listen` ("127.0.0.1:9405", "[::1]:9405"; port 0 picks one).

        `refresh()` returns a status dict and is called before each scrape; if it raises
        (the loop did not answer in time), the scrape still succeeds with the previous
        values and `havip_status_errors_total` goes up. Returns the bound (host, port).
        """
        host, port = parse_listen(listen)
        if not allow_remote and not _is_loopback(host):
            raise ConfigError([f"metrics.listen: {listen}: must be a loopback address such as "
                               "127.0.0.1:9405 (the endpoint has no authentication)"])
        app = make_wsgi_app(self.registry)

        def scrape(environ, start_response):
            if refresh is not None:
                try:
                    self.observe(refresh())
                except Exception:  # noqa: BLE001 - a timeout or a bug must not break the scrape
                    self.status_errors.inc()
            return app(environ, start_response)

        slots = threading.BoundedSemaphore(MAX_SCRAPES)
        owner = self

        class Server(ThreadingWSGIServer):
            # Any local user can connect to the port: a thread and a descriptor per held
            # connection (socketserver's way) ran the daemon out of both. At most
            # MAX_SCRAPES connections are served at once; the next ones are closed at once.
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            request_queue_size = 128

            def process_request(self, request, client_address):
                if not slots.acquire(blocking=False):
                    owner.refused += 1
                    self.shutdown_request(request)
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    slots.release()
                    raise

            def process_request_thread(self, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    slots.release()

        try:
            self._server = make_server(host, port, scrape, Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise AdapterError(f"metrics.listen: {listen}: cannot listen: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="havip-metrics", daemon=True)
        self._thread.start()
        return self._server.server_address[0], self._server.server_address[1]

    def close(self) -> None:
        """Stop the HTTP server, if running."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: scrapes every 15 s would drown the daemon's story."""

    timeout = SCRAPE_TIMEOUT        # a connection that sends nothing gives its slot back

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


def parse_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:9405" -> ("127.0.0.1", 9405); "[::1]:9405" -> ("::1", 9405)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError([f"metrics.listen: {listen}: must be host:port, e.g. 127.0.0.1:9405"])
    return host.removeprefix("[").removesuffix("]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
