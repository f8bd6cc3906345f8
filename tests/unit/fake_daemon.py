"""A stand-in for havip.daemon.loop.Daemon, for the control socket and havipctl tests.

It has what the ControlServer relies on: `call(fn) -> Future` runs fn on its own loop
thread; `feed(event) -> Decision` and `status()` insist on being called there. The
decisions are the real state machine's (`havip.core.machine.step`) on a fake clock
(`advance()` moves it and ticks). A container start or stop "completes" on its own after
`start_delay` / `stop_delay` seconds, fed back through `call` as the real executor does
through `post`; and when we take over from a master we heard, that peer hands over
cleanly (its priority 0 advert `stop_delay` seconds later).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

from havip.core import machine as sm
from havip.model import (Advert, AdvertReceived, ContainerReady, ContainerStopped, StartContainer, Startup,
                         State, StopContainer, Tick)


class RecLog:
    """A structlog-like logger that records (level, event, fields)."""

    def __init__(self):
        self.lines: list[tuple[str, str, dict]] = []

    def _rec(self, level, event, kw):
        self.lines.append((level, event, kw))

    def debug(self, event, **kw):
        self._rec("debug", event, kw)

    def info(self, event, **kw):
        self._rec("info", event, kw)

    def warning(self, event, **kw):
        self._rec("warning", event, kw)

    def error(self, event, **kw):
        self._rec("error", event, kw)

    def exception(self, event, **kw):
        self._rec("exception", event, kw)

    def events(self) -> list[str]:
        return [e for _, e, _ in self.lines]


class FakeDaemon:
    def __init__(self, *, supervise: bool = False, peers: tuple[str, ...] = ("192.0.2.2",),
                 checks: list[dict] | None = None, start_delay: float = 0.05, stop_delay: float = 0.05):
        self.now = 1000.0
        self.params = sm.Params(version=3, priority=100, interval=1.0, supervise=supervise,
                                address="192.0.2.1", interface="eth0")
        self.machine = sm.Machine()
        self.peers_seen = list(peers)
        self.checks = checks if checks is not None else [
            {"name": "docker", "ok": True, "reason": "container milvus is running", "latency": 0.004, "at": 1.0}]
        self.drops = {"bad_ttl": 2}
        self.start_delay, self.stop_delay = start_delay, stop_delay
        self.fed: list = []
        self.hang = threading.Event()            # set: the loop is stuck
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="fake-loop", daemon=True)
        self._thread.start()
        self.call(lambda: self.feed(Startup(interface_up=True))).result(2)
        if supervise:   # start-up stops a stale container first
            assert self.wait_until(lambda: self.machine.container == sm.Container.STOPPED)

    # ------------------------------------------------------------------ the Daemon interface

    def call(self, fn) -> Future:
        fut: Future = Future()
        self._q.put((fn, fut))
        return fut

    def post(self, event) -> None:
        self.call(lambda: self.feed(event))

    def feed(self, event):
        assert threading.current_thread() is self._thread, "feed() off the loop thread"
        d = sm.step(self.machine, self.params, event, self.now)
        self.machine = d.machine
        self.fed.append(event)
        m = self.machine
        if d.transition == (State.BACKUP, State.MASTER) and m.container == sm.Container.WAITING and m.master:
            self._later(self.stop_delay, AdvertReceived(self._advert(m.master.address, 0)))
        for action in d.actions:
            if isinstance(action, StartContainer):
                self._later(self.start_delay, ContainerReady(True, "milvus answered healthy"))
            elif isinstance(action, StopContainer):
                self._later(self.stop_delay, ContainerStopped(True, "container milvus stopped"))
        return d

    def status(self) -> dict:
        assert threading.current_thread() is self._thread, "status() off the loop thread"
        m = self.machine
        return {
            "instance": "master", "state": str(m.state), "since_seconds": round(self.now - m.since, 3),
            "reason": m.reason,
            "priority": {"configured": self.params.priority, "effective": sm.advertised_priority(m, self.params)},
            "vips": ["192.0.2.10/24"], "vip_attached": m.state == "master",
            "master": None if m.master is None else {
                "address": m.master.address, "priority": m.master.priority, "interval": m.master.interval,
                "last_seen_seconds_ago": round(self.now - m.master.last_seen, 3)},
            "peers_seen": list(self.peers_seen),
            "standby_peers": list(self.peers_seen),
            "container": str(m.container) if self.params.supervise else None,
            "checks": list(self.checks), "healthy": m.healthy, "paused": m.paused, "hold": m.hold,
            "transitions": m.transitions, "drops": dict(self.drops), "counters": {}, "received": 7,
            "history": [],
        }

    # ------------------------------------------------------------------ test helpers

    def run(self, fn):
        """Run fn on the loop thread and return its result."""
        return self.call(fn).result(2)

    def advance(self, seconds: float) -> None:
        """Let time pass on the fake clock, and tick as the real loop would."""
        def go():
            self.now += seconds
            self.feed(Tick())
        self.run(go)

    def become_master(self) -> None:
        """No advert for a master-down interval: take over (the container starts once
        the machine is sure no other master is there)."""
        self.advance(10)
        while self.run(lambda: self.machine.container == sm.Container.WAITING):
            self.advance(self.run(lambda: self.machine.gate_deadline) - self.now)

    @staticmethod
    def _advert(address: str, priority: int) -> Advert:
        return Advert(version=3, vrid=51, priority=priority, interval=1.0, addresses=("192.0.2.10",), src=address)

    def hear_master(self, address: str = "192.0.2.2", priority: int = 150) -> None:
        self.run(lambda: self.feed(AdvertReceived(self._advert(address, priority))))

    def set_health(self, healthy: bool) -> None:
        from havip.model import HealthChanged
        self.run(lambda: self.feed(HealthChanged(healthy=healthy, reason="data path missing"
                                                 if not healthy else "data path ok", role="backup")))

    def wait_until(self, pred, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run(pred):
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self.hang.clear()
        self._q.put(None)
        self._thread.join(2)

    def _later(self, delay: float, event) -> None:
        t = threading.Timer(delay, lambda: self.call(lambda: self.feed(event)))
        t.daemon = True
        t.start()

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            while self.hang.is_set():
                time.sleep(0.01)
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except Exception as exc:  # noqa: BLE001
                fut.set_exception(exc)
