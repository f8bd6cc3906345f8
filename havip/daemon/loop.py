"""The event loop: one thread owns the state machine.

It waits on the VRRP socket, the link monitor and a wake pipe, with a timeout taken from
the machine's next deadline. Worker threads (checks, container, control requests) only
post events and wake the loop; only the loop calls `step` and applies actions.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from havip.config import Config, load
from havip.core import machine as sm
from havip.daemon import contracts
from havip.daemon.beaconing import BeaconService
from havip.daemon.executor import Executor
from havip.daemon.peers import Peers
from havip.daemon import realtime
from havip.daemon.ratelimit import RateLimiter
from havip.daemon.receive import Receiver
from havip.daemon.sdnotify import SdNotify
from havip.errors import HavipError
from havip.model import (
    AdvertReceived, Drop, DropReason, Event, HealthChanged, LinkChanged, ParamsChanged, SendAdvert, Shutdown,
    Startup, State, Tick,
)

MAX_WAIT = 0.5          # never sleep longer, so signals and link changes are seen promptly
EXIT_LOOP_FAILED = 1    # the loop died of a bug: systemd's Restart=on-failure starts it again
READ_PER_TURN = 64      # adverts read per turn of the loop
READ_BEFORE_TAKEOVER = 4096
MAX_RECEIPT_AGE = 0.01  # an advert's arrival counts at most this much (or an interval/10) before now
# A backup about to take over wakes this much before its master-down deadline and polls up
# to it: the kernel's wake-up and the interpreter's return from select() (0.05-0.1 ms, more
# on a loaded host) then fall before the deadline instead of after it. Only then: a master's
# adverts and every other timer sleep to their deadline.
TAKEOVER_SPIN = 0.0005


def receipt_time(now: float, wall_now: float, stamp: float | None, interval: float) -> float:
    """When an advert arrived, on the loop's clock: `now` less the age its kernel stamp
    (wall clock) gives it. A backup's master-down timer runs from the arrival (RFC 5798
    6.4.2: reset "upon receiving" it), as keepalived's does, not from when the loop got
    round to it (a wake-up and a decode later, ~0.5 ms; more on a loaded host).

    The age counts at most MAX_RECEIPT_AGE (and a tenth of the advert interval): after a
    stall the queue holds old adverts, and the timer they set must not make the backup take
    over before it has read the newer ones behind them. No stamp, or a wall clock that
    stepped backwards meanwhile: `now`."""
    if stamp is None:
        return now
    age = wall_now - stamp
    return now - min(max(age, 0.0), MAX_RECEIPT_AGE, interval / 10)


@dataclass
class Adapters:
    """Everything the daemon touches, built by havip.daemon.build or by tests."""

    make_socket: Callable[[], contracts.AdvertSocket]   # re-created when the link returns
    vips: contracts.Vips
    announcer: contracts.Announcer
    link: contracts.Link
    runtime: contracts.ContainerRuntime | None = None
    milvus_probe: Any = None                # MilvusProbe (handed to runtime.wait_ready)
    lease: contracts.Lease | None = None    # StorageLease, or another backend with its contract
    make_runner: Callable[..., contracts.Runner] | None = None   # (on_change) -> CheckRunner
    make_beacon: Callable[[str], Any] | None = None  # (source) -> Beacon (peer state on the link)
    extra_close: list[Callable[[], None]] = field(default_factory=list)


class Daemon:
    def __init__(self, cfg: Config, adapters: Adapters, *, log, clock: Callable[[], float] = time.monotonic,
                 metrics=None, on_transition: Callable[[dict], None] | None = None,
                 notify: SdNotify | None = None, config_path: str | None = None,
                 wall: Callable[[], float] = time.time, load_config: Callable[[str], Config] = load,
                 set_realtime: Callable[[int], realtime.Scheduling] = realtime.apply):
        self.cfg = cfg
        self.config_path = config_path
        self.load_config = load_config      # called off the loop thread at a reload (SIGHUP)
        self.reloading = False
        self.ad = adapters
        self.log = log.bind(instance=cfg.instance)
        self.clock = clock
        self.wall = wall
        self.metrics = metrics
        self.on_transition = on_transition
        self.notify = notify if notify is not None else SdNotify({})
        self.peers = Peers()
        self.machine = sm.Machine()
        self.params = self._params("")
        self.sock = None
        self.receiver = Receiver(log=self.log, clock=clock, metrics=metrics)
        self.lateness: deque[float] = deque(maxlen=1000)
        # Inputs (advert, beacon, control) whose handling raised: counted, logged rate-limited.
        self.input_errors: Counter[str] = Counter()
        self._error_log = RateLimiter(60.0, burst=5, max_keys=16)
        self.failure: str | None = None
        self._set_realtime = set_realtime
        self.scheduling: realtime.Scheduling | None = None
        self.beacons = BeaconService(cfg, self.peers, make_beacon=adapters.make_beacon, log=self.log, clock=clock,
                                     wall=wall, metrics=metrics, on_error=self._input_error)
        self.history: deque[dict] = deque(maxlen=50)
        self._events: deque[Event] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop_requested = False
        self._reload_requested = False
        self._shutdown_at: float | None = None
        self._forced = False
        self.stalls = 0             # times the loop stood still longer than an advert interval
        self._link_up = False
        self._runner = None
        self._runner_role: str | None = None
        self.executor = Executor(cfg, sock=None, vips=adapters.vips, announcer=adapters.announcer,
                                 runtime=adapters.runtime, milvus_probe=adapters.milvus_probe,
                                 lease=adapters.lease, post=self.post, log=self.log, clock=clock, metrics=metrics)

    # ------------------------------------------------------------------ plumbing

    def _params(self, address: str) -> sm.Params:
        c = self.cfg
        return sm.Params(version=c.version, priority=c.priority, interval=c.advert_interval,
                         preempt=c.preempt, preempt_delay=c.preempt_delay, address=address,
                         supervise=c.milvus is not None, garp_refresh=c.garp.refresh, interface=c.interface,
                         lease=self.ad.lease is not None)

    def post(self, event: Event) -> None:
        """Thread-safe: queue an event and wake the loop."""
        with self._lock:
            self._events.append(event)
            self._wake()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Thread-safe: run fn() on the loop thread; the Future carries its result.

        The control socket uses this: a request records an intent (an event fed by the
        loop) or reads a status snapshot; it never touches the VIP or a container itself.
        """
        fut: Future = Future()
        with self._lock:
            self._calls.append((fn, fut))
            self._wake()
        return fut

    def _wake(self) -> None:
        """Wake the loop from select(). A full pipe is awake already. After close() there is
        no loop to wake, and the pipe's descriptor numbers may belong to another file by then:
        a control request or a reload still in flight at shutdown must not write there."""
        if self._closed:
            return
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass

    def request_stop(self, *_args) -> None:
        self._stop_requested = True
        self._wake()        # a signal handler: no lock (the loop thread may hold it)

    def _open_socket(self) -> None:
        if self.sock is not None:
            return
        try:
            self.sock = self.ad.make_socket()
        except HavipError as exc:
            self.log.error("socket_failed", error=str(exc))
            self.sock = None
            return
        self.executor.sock = self.sock
        self.params = self._params(self.sock.source)
        self.beacons.open(self.sock.source)
        self.executor.warm()

    @property
    def beacon(self):
        """The peer beacon's socket, while it is open."""
        return self.beacons.sock

    def _close_socket(self) -> None:
        self.beacons.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.executor.sock = None

    # ------------------------------------------------------------------ feeding the machine

    def feed(self, event: Event, at: float | None = None, decision: sm.Decision | None = None) -> sm.Decision:
        """Step the machine with `event` and apply what it decides. `at`: when the event
        happened, if before now (an advert's arrival). `decision`: the step's result taken
        ahead for this very machine and event (a Tick at a deadline now passed)."""
        now = self.clock()
        before = self.machine
        if decision is None:
            decision = sm.step(self.machine, self.params, event, now if at is None else min(at, now))
        self.machine = decision.machine
        if isinstance(event, Tick) and before.adver_deadline is not None and any(
                isinstance(a, SendAdvert) for a in decision.actions):
            late = now - before.adver_deadline
            self.lateness.append(late)
            if late > self.cfg.advert_interval and self._error_log.allow("advert_late", now):
                # A backup declares us dead after 3 intervals: say so long before that.
                self.log.warning("advert_late", late_ms=round(late * 1000, 1), interval=self.cfg.advert_interval,
                                 consequence="the host or the loop is starved; a backup takes over after "
                                             "3 intervals without an advert")
        self.executor.apply(decision.actions, now)
        if decision.transition:
            old, new = decision.transition
            entry = {"from": str(old), "to": str(new), "reason": decision.reason, "at": time.time()}
            self.history.append(entry)
            timing = {"apply_ms": round((self.clock() - now) * 1000, 3)}
            if old == State.BACKUP and before.master_down_deadline is not None and new == State.MASTER:
                timing["timer_late_ms"] = round((now - before.master_down_deadline) * 1000, 3)
            self.log.info("transition", **{"from": str(old), "to": str(new)}, reason=decision.reason, **timing)
            self.notify.status(f"{new}: {decision.reason}")
            if self.metrics:
                self.metrics.transition(old, new)
            if self.on_transition:
                self.on_transition(entry)
        elif decision.reason:
            self.log.info("decision", state=str(self.machine.state), reason=decision.reason)
        if decision.reason:
            self.beacons.due = 0.0      # peers learn of a change at once, not a second later
        self._sync_checks()
        return decision

    def _sync_checks(self) -> None:
        if self._runner is None:
            return
        role = sm.check_role(self.machine) if self.machine.state != State.STOPPED else "none"
        if role != self._runner_role:
            self._runner_role = role
            self._runner.set_role(role)

    def _on_health(self, healthy: bool, reason: str, fence: bool = False) -> None:
        # Called by the runner under its lock, for the role it currently checks: stale
        # verdicts (a role that changed meanwhile) never reach here.
        role = getattr(self._runner, "role", None) or self._runner_role or "backup"
        self.post(HealthChanged(healthy=healthy, reason=reason, role=role, fence=fence))

    # ------------------------------------------------------------------ inputs

    def _read_adverts(self) -> None:
        own = {self.sock.source}
        for _ in range(self._read_budget()):
            # bounded: a flood must not starve the timers
            try:
                pkt = self.sock.recv()
            except HavipError as exc:
                self.executor.counters["error_recv"] += 1
                if self._error_log.allow("recv", self.clock()):
                    self.log.error("recv_failed", error=str(exc), count=self.executor.counters["error_recv"])
                return
            except Exception as exc:  # noqa: BLE001 - an input must never stop the loop
                self._input_error("advert", exc)
                return
            if pkt is None:
                return
            try:
                advert = self.receiver.handle(pkt, self.cfg, own)
                if advert is not None:
                    now = self.clock()
                    self.peers.heard_advert(pkt.src, now)
                    at = receipt_time(now, self.wall(), pkt.stamp, self.cfg.advert_interval)
                    self.feed(AdvertReceived(advert), at=at)
            except Exception as exc:  # noqa: BLE001 - a bug costs this packet, not the daemon
                self.receiver.drop(Drop(DropReason.INTERNAL_ERROR, repr(exc)[:200], str(pkt.src)), str(pkt.src))
                self._input_error("advert", exc)

    def _read_budget(self) -> int:
        """Packets to read this turn: 64, so that a flood cannot delay our own adverts; but
        a backup whose master-down timer is due reads the whole queue first (up to 4,096),
        so that a master's advert queued behind a flood is seen before it takes over."""
        m = self.machine
        if m.state == State.BACKUP and m.master_down_deadline is not None \
                and self.clock() >= m.master_down_deadline:
            return READ_BEFORE_TAKEOVER
        return READ_PER_TURN

    def _input_error(self, source: str, exc: BaseException) -> None:
        """An input whose handling raised: counted by input, logged with its traceback at
        most once a minute per input (five lines a minute overall), never fatal."""
        self.input_errors[source] += 1
        if self.metrics:
            self.metrics.input_errors.labels(input=source).inc()
        if self._error_log.allow(source, self.clock()):
            self.log.error("input_failed", input=source, error=repr(exc)[:300], count=self.input_errors[source],
                           consequence="dropped; the loop goes on", exc_info=exc)

    @property
    def drops(self):
        return self.receiver.drops

    def _send_beacon(self) -> None:
        m = self.machine
        self.beacons.send({
            "instance": self.cfg.instance, "vrid": self.cfg.virtual_router_id, "state": str(m.state),
            "priority": sm.advertised_priority(m, self.params), "healthy": m.healthy, "paused": m.paused,
            "container": str(m.container) if self.cfg.milvus else None}, self.sock.source if self.sock else "")

    def _check_link(self) -> None:
        st = self.ad.link.status()
        if st.up == self._link_up:
            return
        self._link_up = st.up
        if st.up:
            self._open_socket()
        else:
            self._close_socket()
        self.feed(LinkChanged(up=st.up, detail=st.detail))

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        """Join the network: first decision, checks started."""
        st = self.ad.link.status()
        self._link_up = st.up
        if st.up:
            self._open_socket()
        self.log.info("starting", interface=self.cfg.interface, vrid=self.cfg.virtual_router_id,
                      priority=self.cfg.priority, version=self.cfg.version,
                      link=st.detail or ("up" if st.up else "down"))
        self.beacons.say()
        if self.ad.lease is not None and getattr(self.ad.lease, "backend", "file") == "file":
            # A file's mount may keep locks on this host only; an etcd lease's path is its key.
            from havip.runtime.lease import mount_warning

            warning = mount_warning(self.ad.lease.path)
            if warning:
                self.log.warning("lease_unsafe", reason=warning)
        self.feed(Startup(interface_up=st.up))
        if self.ad.make_runner is not None:
            self._runner = self.ad.make_runner(self._on_health)
            self._sync_checks()
            self._runner.start()

    def run(self) -> int:
        """Start, serve until stopped, close. The exit status is 0 after a clean stop and
        EXIT_LOOP_FAILED when the loop died; either way the VIP and Milvus were handed over."""
        try:
            self.schedule()
            self.start()
            self.notify.ready(f"{self.machine.state}: {self.machine.reason}")
        except Exception as exc:  # noqa: BLE001 - hand over below, then exit non-zero
            self._fail_safe(exc)
            self.close()
            return EXIT_LOOP_FAILED
        return self.serve()

    def serve(self) -> int:
        """The loop after start(). Whatever escapes it (a bug: inputs are caught one by one)
        ends it as SIGTERM would, by handing over, and `close()` runs in any case."""
        try:
            while self.machine.state != State.STOPPED or self._draining():
                self.run_once()
        except BaseException as exc:  # noqa: BLE001 - hand over, then exit non-zero
            self._fail_safe(exc)
        finally:
            self.close()
        return EXIT_LOOP_FAILED if self.failure else 0

    def _fail_safe(self, exc: BaseException) -> None:
        """The loop died: hand over exactly as on SIGTERM (the machine's Shutdown, driven by
        a minimal loop that reads no input), or, if even that fails, do what `havip
        cleanup` does: VIP off, container stopped, lease released, priority 0."""
        self.failure = f"{type(exc).__name__}: {exc}"[:300]
        self.log.critical("loop_failed", error=self.failure, exc_info=exc,
                          consequence="handing over as on SIGTERM, then exiting with status 1")
        try:
            self.notify.stopping(f"loop failed: {self.failure}")
            if self._shutdown_at is None:
                self._shutdown_at = self.clock()
                self.feed(Shutdown())
            limit = (self.cfg.milvus.stop_timeout + 15) if self.cfg.milvus else 5
            end = time.monotonic() + limit
            # Drained as serve() drains: a lease granted after the machine stopped must still
            # reach it, to be given back.
            while (self.machine.state != State.STOPPED or self._draining()) and time.monotonic() < end:
                self.notify.kick(self.clock())      # systemd's watchdog: the handover is in progress
                select.select([self._wake_r], [], [], 0.05)
                self._drain_wake()
                self._feed_posted()
                self.feed(Tick())
        except Exception as again:  # noqa: BLE001 - fall back to the blunt cleanup below
            self.log.critical("handover_failed", error=repr(again)[:300], exc_info=again)
        if self.machine.state != State.STOPPED:
            self._forced = True
            self.executor.emergency_stop()

    def schedule(self) -> None:
        """Set the calling thread's (the loop's) scheduling, before it starts any worker.
        A refusal is a warning: the daemon runs at normal priority."""
        want = self.cfg.realtime_priority
        self.scheduling = self._set_realtime(want)
        if want and self.scheduling.policy != "SCHED_RR":
            self.log.warning("realtime_refused", requested=want, reason=self.scheduling.detail,
                             consequence="advert timers can be late on a loaded host")
        elif want:
            self.log.info("realtime", policy=self.scheduling.policy, priority=self.scheduling.priority,
                          reason=self.scheduling.detail)
        hint = realtime.advice(self.cfg.advert_interval, want)
        if hint:
            self.log.warning("realtime_advice", reason=hint)

    def run_once(self) -> None:
        now = self.clock()
        self.notify.kick(now)      # WATCHDOG=1 every WatchdogSec/2, from the loop itself
        self._note_stall(now)
        if self._reload_requested and not self.reloading:     # a SIGHUP during a reload: once more after it
            self._reload_requested = False
            self.reload()
        if self._stop_requested and self._shutdown_at is None:
            self._shutdown_at = now
            self.notify.stopping(f"{self.machine.state}: shutting down")
            self.feed(Shutdown())
        if self._shutdown_at is not None and self.machine.state != State.STOPPED:
            limit = (self.cfg.milvus.stop_timeout + 15) if self.cfg.milvus else 5
            if now - self._shutdown_at > limit:
                self.log.error("shutdown_forced", reason=f"container did not stop within {limit:.0f}s",
                               consequence="the storage lease stays held until `havip cleanup` stops it")
                self._forced = True
                self.machine = sm.Machine(state=State.STOPPED)
                return
        deadline = min((d for d in (sm.next_deadline(self.machine), self.executor.next_garp()) if d is not None),
                       default=now + MAX_WAIT)
        fds = [self._wake_r, self.ad.link]
        if self.sock is not None:
            fds.append(self.sock)
        if self.beacon is not None:
            fds.append(self.beacon)
            deadline = min(deadline, self.beacons.due)
        # From a fresh reading: the turn's work since `now` must not make the wake-up late.
        timeout = max(0.0, min(deadline - self.clock(), MAX_WAIT))
        spin = self._takeover_due(deadline)
        ahead = None
        try:
            if spin and timeout <= TAKEOVER_SPIN:
                ahead = self._decide_ahead(deadline)
                self._rehearse()
                readable = self._poll_until(fds, deadline)
            else:
                readable, _, _ = select.select(fds, [], [], max(0.0, timeout - TAKEOVER_SPIN) if spin else timeout)
        except InterruptedError:
            readable = []
        if self._wake_r in readable:
            self._drain_wake()
        if self.ad.link in readable and self.ad.link.drain():
            self._check_link()
        if self.sock is not None and self.sock in readable:
            self._read_adverts()
        if self.beacon is not None and self.beacon in readable:
            self.beacons.read(frozenset({self.sock.source}) if self.sock else frozenset())
        self._feed_posted()
        self._run_calls()
        if ahead is not None and ahead[0] is self.machine and ahead[1] is self.params and self.clock() >= deadline:
            self.feed(Tick(), decision=ahead[2])
        else:
            self.feed(Tick())
        self.executor.run_garp(self.clock())
        self._send_beacon()

    def _takeover_due(self, deadline: float) -> bool:
        """The loop's next deadline is this backup's master-down timer."""
        m = self.machine
        return m.state == State.BACKUP and m.master_down_deadline is not None and m.master_down_deadline <= deadline

    def _decide_ahead(self, deadline: float) -> tuple | None:
        """The machine's decision for a Tick at `deadline`, taken before it (the machine is
        pure): if nothing reaches the machine meanwhile, the takeover's first advert, VIP
        and ARP go out at the deadline without the decision's own time after it."""
        try:
            return self.machine, self.params, sm.step(self.machine, self.params, Tick(), deadline)
        except Exception:  # noqa: BLE001 - the Tick at the deadline takes the ordinary path and says why
            return None

    def _rehearse(self) -> None:
        """Walk the takeover's send path without sending (the cached advert, the ARP frames
        for this MAC, the VIP requests for this index): what it touches is then in the
        CPU's caches, not in memory, when the deadline comes."""
        try:
            self.executor.warm()
            self.ad.vips.prepare()
        except Exception:  # noqa: BLE001 - only a rehearsal: the takeover itself reports failures
            pass

    def _poll_until(self, fds: list, deadline: float) -> list:
        """Poll `fds` until one is readable or the clock reaches `deadline` (at most
        2 x TAKEOVER_SPIN of real time, whatever the injected clock says)."""
        give_up = time.monotonic() + 2 * TAKEOVER_SPIN
        while True:
            readable, _, _ = select.select(fds, [], [], 0)
            if readable or self.clock() >= deadline or time.monotonic() >= give_up:
                return readable

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _feed_posted(self) -> None:
        """Feed the events the workers posted, in order."""
        while True:
            with self._lock:
                if not self._events:
                    return
                ev = self._events.popleft()
            self.feed(ev)

    def _note_stall(self, now: float) -> None:
        """Say so when the loop stood still (SIGSTOP, a VM paused, swap): adverts were not
        sent meanwhile, so the peer may have taken over (behind the storage lease)."""
        last, self._last_turn = getattr(self, "_last_turn", None), now
        if last is not None and now - last > max(1.0, 2 * self.cfg.advert_interval):
            self.stalls += 1
            self.log.warning("loop_stalled", seconds=round(now - last, 3), state=str(self.machine.state),
                             consequence="no advert was sent meanwhile: the peer may have become master")

    def _draining(self) -> bool:
        """Stopped, but container or lease work is still out: its answer must reach the machine
        (a lease granted after we left is given back by it). Bounded like the shutdown."""
        if self._forced or not (self.executor.busy() or self._events):
            return False
        limit = (self.cfg.milvus.stop_timeout + 15) if self.cfg.milvus else 5
        if self._shutdown_at is not None and self.clock() - self._shutdown_at > limit:
            self.log.error("shutdown_forced", reason=f"container or lease work still running after {limit:.0f}s",
                           consequence="a lease taken meanwhile stays held until `havip cleanup`")
            self._forced = True
            return False
        return True

    def _run_calls(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    return
                fn, fut = self._calls.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except Exception as exc:  # noqa: BLE001 - the caller gets it; the loop goes on
                self._input_error("control", exc)
                fut.set_exception(exc)

    def close(self) -> None:
        """Stop the workers and close everything; each step is tried even if one fails."""
        steps = [self._runner.stop] if self._runner is not None else []
        steps += [lambda: self.executor.close(wait=not self._forced), self._close_socket,
                  *self.ad.extra_close]
        for fn in steps:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - closing must go on
                self.log.error("close_failed", error=repr(exc)[:300])
        with self._lock:            # post() and call() wake under the lock: none is half-way
            if not self._closed:
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    def request_reload(self, *_args) -> None:
        self._reload_requested = True
        self._wake()

    def reload(self) -> None:
        """Re-read the config file (SIGHUP): read off the loop thread, applied on it."""
        from havip.daemon.reload import reload_daemon

        reload_daemon(self)

    def apply_config(self, cfg: Config) -> None:
        """Run with a new config whose restart-only keys are unchanged (see reload.plan)."""
        self.cfg = cfg
        self.executor.set_config(cfg)
        self.params = self._params(self.params.address)
        self.beacons.set_config(cfg, self.sock.source if self.sock else None)
        self.feed(ParamsChanged())

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        m = self.machine
        now = self.clock()
        master = m.master
        return {
            "instance": self.cfg.instance,
            "state": str(m.state),
            "since_seconds": round(now - m.since, 3),
            "reason": m.reason,
            "priority": {"configured": self.cfg.priority, "effective": sm.advertised_priority(m, self.params)},
            "vips": [str(v) for v in self.cfg.virtual_ipaddresses],
            "advert_interval": self.cfg.advert_interval,
            # How long this host waits without an advert before it takes over (RFC 3768/5798).
            "master_down_interval": round(sm.master_down(m, self.params), 3),
            "vip_attached": self.executor.vip_attached,
            "master": None if master is None else {
                "address": master.address, "priority": master.priority, "interval": master.interval,
                "last_seen_seconds_ago": round(now - master.last_seen, 3)},
            "container": str(m.container) if self.cfg.milvus else None,
            "lease": self.ad.lease.view() if self.ad.lease is not None else None,
            "checks": [dataclasses.asdict(r) for r in self._runner.last_results()] if self._runner else [],
            "healthy": m.healthy,
            "paused": m.paused,
            "hold": m.hold,
            "scheduling": self.scheduling.view() if self.scheduling else None,
            "transitions": m.transitions,
            "drops": dict(self.drops),
            "input_errors": dict(self.input_errors),
            "beacon": self.beacons.status(),
            **self.peers.view(now),
            "container_timings": dict(self.executor.container_timings),
            "counters": dict(self.executor.counters),
            "received": self.receiver.received,
            "address_mismatch_accepted": self.receiver.mismatches_accepted,
            "history": list(self.history)[-10:],
        }
