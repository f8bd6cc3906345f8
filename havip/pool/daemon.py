"""The pool's loop: check results in, membership decided, nginx re-rendered on change.

Only the loop changes state. Member threads (havip.pool.checker) post results into a
queue; `handle()` feeds them to `health.observe`; when the membership differs from
the one nginx runs, `apply()` renders, has `nginx -t` check the render, and reloads. A
render nginx refuses is never applied: it is logged, counted and shown in the status,
and tried again only when the membership changes again. Every `status_every` seconds
the loop reads the access log's new lines and writes the status file that `havipctl
pool status` reads. The clock is injected; tests drive `handle`/`tick` with a fake one.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from havip.errors import AdapterError
from havip.pool import health
from havip.pool.accesslog import Tail
from havip.pool.config import PoolConfig, canonical
from havip.pool.nginx import Nginx, NginxInvalid
from havip.pool.probe import Result
from havip.pool.render import render

RETRY_AFTER = 5.0       # seconds before a failed nginx start or reload is tried again


class PoolDaemon:
    def __init__(self, cfg: PoolConfig, nginx: Nginx, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, log=None, metrics=None, source: str = "pool.yaml",
                 status_every: float = 1.0):
        self.cfg, self.nginx, self.clock, self.wall = cfg, nginx, clock, wall
        self.log = log or structlog.get_logger("havip.pool")
        self.metrics = metrics
        self.source = source
        self.status_every = status_every
        self.members = {m: health.Member(m) for m in cfg.read_nodes}
        self.applied: dict[str, bool] | None = None     # the membership nginx runs
        self.nginx_pid: int | None = None
        self.reloads = 0
        self.render_errors = 0
        self.last_error: str | None = None
        self.last_apply: float | None = None
        self._failed_render: dict[str, bool] | None = None
        self._retry_at: float | None = None     # a failed start/reload is retried; an invalid render is not
        self.started = wall()
        self.queue: queue.Queue[tuple[str, Result]] = queue.Queue()
        self.stopping = threading.Event()
        self._reload_requested = threading.Event()
        self._checkers: dict[str, object] = {}
        self._make_checker = None
        self._first_deadline = float("inf")
        self.cycle_errors = 0
        self._next_cycle_log = 0.0
        self.tail = Tail(nginx.prefix / "logs" / "access.log", reopen=nginx.reopen)
        self._next_status = 0.0
        self.reasons: list[str] = []     # every membership sentence, newest last (bounded)

    # ---------------------------------------------------------------- decisions

    def post(self, address: str, result: Result) -> None:
        """From a member's thread: queue a result for the loop."""
        self.queue.put((address, result))

    def handle(self, address: str, result: Result) -> str | None:
        """Feed one result; the membership sentence if the member joined or left."""
        m = self.members.get(address)
        if m is None:
            return None
        new, said = health.observe(m, result.ok, result.reason, self.clock(), self.cfg.check.rise,
                                   self.cfg.check.fall, result.latency)
        self.members[address] = new
        if self.metrics is not None:
            self.metrics.check(address, result)
        if said:
            self.log.info("member", member=address, healthy=new.healthy, reason=said)
            self.reasons = (self.reasons + [f"{address} {said}"])[-20:]
            if self.metrics is not None:
                self.metrics.transition(address, new.healthy)
        return said

    def all_checked(self) -> bool:
        return all(m.healthy is not None for m in self.members.values())

    def membership(self) -> dict[str, bool]:
        return health.membership(self.members)

    # ---------------------------------------------------------------- nginx

    def apply(self) -> bool:
        """Render, test and (re)load nginx if the membership changed; True if nginx runs it."""
        want = self.membership()
        if want == self.applied:
            return True
        if want == self._failed_render and (self._retry_at is None or self.clock() < self._retry_at):
            return False
        text = render(self.cfg, want, source=self.source)
        started = self.nginx_pid is not None and self.nginx.pid() == self.nginx_pid
        try:
            self.nginx.install(text)
            if started:
                self.nginx.reload()
                what = "reloaded"
            else:
                self.nginx_pid = self.nginx.pid()
                if self.nginx_pid is None:
                    self.tail.skip_existing()
                    self.nginx_pid = self.nginx.start()
                    what = "started"
                else:
                    self.nginx.reload()    # an nginx left running by an earlier pool: adopt it
                    what = "adopted and reloaded"
        except NginxInvalid as exc:
            return self._refused(want, f"rendered config refused by nginx -t, not applied: {exc}", "invalid")
        except (AdapterError, OSError) as exc:
            return self._refused(want, f"nginx could not apply the config: {exc}", "failed")
        self.applied, self._failed_render, self.last_error = want, None, None
        self.reloads += 1
        self.last_apply = self.wall()
        members = ", ".join(a for a, up in want.items() if up) or "none"
        self.log.info("nginx", action=what, in_pool=members, pid=self.nginx_pid)
        if self.metrics is not None:
            self.metrics.reload("ok")
        return True

    def _refused(self, want: dict[str, bool], why: str, kind: str) -> bool:
        self._failed_render = want
        self._retry_at = self.clock() + RETRY_AFTER if kind == "failed" else None
        self.render_errors += 1
        self.last_error = why
        self.log.error("nginx", error=why)
        if self.metrics is not None:
            self.metrics.reload(kind)
        return False

    # ---------------------------------------------------------------- status

    def status(self) -> dict:
        now, wall = self.clock(), self.wall()
        counts = self.tail.counts
        members = []
        for a, m in self.members.items():
            key = canonical(a)
            members.append({
                "address": a, "healthy": m.healthy, "in_nginx": bool(self.applied and self.applied.get(a)),
                "since_seconds": None if m.since is None else round(now - m.since, 3),
                "reason": m.reason, "last_check": m.last_reason, "latency": m.last_latency,
                "passes": m.passes, "fails": m.fails, "changes": m.changes,
                "requests": counts.served.get(key, 0), "retried_elsewhere": counts.retried.get(key, 0)})
        writer = canonical(self.cfg.writer)
        return {
            "instance": self.cfg.instance, "pid": os.getpid(), "updated": wall, "listen": self.cfg.listen,
            "fallback": self.cfg.fallback, "read_methods": list(self.cfg.read_methods),
            "check": {"kind": self.cfg.check.kind, "interval": self.cfg.check.interval,
                      "timeout": self.cfg.check.timeout, "rise": self.cfg.check.rise, "fall": self.cfg.check.fall},
            "members": members,
            "healthy_members": sum(1 for m in self.members.values() if m.healthy),
            "writer": {"address": self.cfg.writer, "requests": counts.served.get(writer, 0)},
            "answered_unavailable": counts.local,
            "nginx": {"pid": self.nginx_pid, "config": str(self.nginx.conf), "applies": self.reloads,
                      "render_errors": self.render_errors, "last_error": self.last_error,
                      "last_apply": self.last_apply, "in_sync": self.applied == self.membership()},
            "cycle_errors": self.cycle_errors, "bad_log_lines": counts.bad_lines,
            "recent": list(self.reasons),
        }

    def write_status(self) -> dict:
        self.tail.poll()
        st = self.status()
        path = Path(self.cfg.state_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(st, sort_keys=True))
        os.replace(tmp, path)
        if self.metrics is not None:
            self.metrics.observe(st)
        return st

    # ---------------------------------------------------------------- loop

    def tick(self) -> None:
        """Apply the membership if it changed; write the status when due."""
        if self.all_checked() or self.applied is not None:
            before = self.applied
            if self.apply() and self.applied is not before:
                self._next_status = 0.0       # show a membership change at once
        if self.clock() >= self._next_status:
            self._next_status = self.clock() + self.status_every
            try:
                self.write_status()
            except OSError as exc:
                self.log.error("status", error=f"cannot write {self.cfg.state_path}: {exc}")

    def run(self, make_checker: Callable[[str, PoolConfig], object],
            reload_config: Callable[[], PoolConfig] | None = None) -> int:
        """Run until stop(): one checker thread per member (`make_checker(address, cfg)`),
        SIGHUP re-reads the config (`reload_config`); stop nginx at the end."""
        self._make_checker = make_checker
        self._checkers = {a: make_checker(a, self.cfg) for a in self.cfg.read_nodes}
        for c in self._checkers.values():
            c.start()
        self._first_round()
        try:
            while not self.stopping.is_set():
                self._drain()
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    if reload_config is not None:
                        self._reload(reload_config)
                if not self.all_checked() and self.clock() >= self._first_deadline:
                    for a, m in self.members.items():
                        if m.healthy is None:
                            self.handle(a, Result(False, f"{a} did not answer its first check", 0.0, self.clock()))
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - a bug in one cycle must not end the pool
                    self.cycle_errors += 1
                    if self.clock() >= self._next_cycle_log:      # logged at most every 10 s, all counted
                        self._next_cycle_log = self.clock() + 10.0
                        self.log.exception("pool cycle failed", count=self.cycle_errors)
        finally:
            for c in self._checkers.values():
                c.stop()
            try:
                self.nginx.stop()
            except (AdapterError, OSError) as exc:
                self.log.error("nginx", error=f"stop: {exc}")
            try:
                Path(self.cfg.state_path).unlink(missing_ok=True)
            except OSError:
                pass
        return 0

    def _first_round(self) -> None:
        # A new member's first render waits for its first answer, at most one check
        # timeout (plus slack): a node that has not answered by then starts outside.
        self._first_deadline = self.clock() + self.cfg.check.timeout + 1.0

    def _drain(self) -> None:
        try:
            self.handle(*self.queue.get(timeout=0.1))
            while True:
                self.handle(*self.queue.get_nowait())
        except queue.Empty:
            pass

    # ---------------------------------------------------------------- SIGHUP

    def _reload(self, reload_config: Callable[[], PoolConfig]) -> None:
        from havip.errors import ConfigError

        try:
            cfg = reload_config()
        except ConfigError as exc:
            self.last_error = "new config refused, the old one kept: " + "; ".join(exc.problems)
            self.log.error("reload", error=self.last_error)
            return
        said = self.reconfigure(cfg)
        self.log.info("reload", result=said)

    def reconfigure(self, cfg: PoolConfig) -> str:
        """Apply a new config: members added or removed, checks restarted if they changed,
        nginx re-rendered. Keys that name the running nginx or files need a restart."""
        fixed = ("instance", "nginx.binary", "nginx.prefix", "status_file", "metrics")
        changed = [k for k in fixed if _get(cfg, k) != _get(self.cfg, k)]
        if changed:
            self.last_error = f"new config not applied: {', '.join(changed)} change only with a restart"
            return self.last_error
        old, self.cfg = self.cfg, cfg
        restart_all = cfg.check != old.check
        for a in list(self._checkers):
            if restart_all or a not in cfg.read_nodes:
                self._checkers.pop(a).stop()
        self.members = {a: self.members.get(a) or health.Member(a) for a in cfg.read_nodes}
        for a in cfg.read_nodes:
            if a not in self._checkers:
                self._checkers[a] = self._make_checker(a, cfg)
                self._checkers[a].start()
        self._first_round()
        self.applied, self._failed_render, self.last_error = None, None, None     # render afresh
        return (f"config reloaded: {len(cfg.read_nodes)} read nodes"
                + (", checks restarted" if restart_all else ""))

    def stop(self, *_args) -> None:
        self.stopping.set()

    def request_reload(self, *_args) -> None:
        """SIGHUP: only records the wish; the loop re-reads the config."""
        self._reload_requested.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, self.request_reload)


def _get(cfg: PoolConfig, dotted: str) -> object:
    value: object = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
