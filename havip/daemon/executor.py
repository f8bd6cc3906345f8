"""Applies the state machine's actions through the adapters.

Fast actions (advert send, netlink) run inline on the loop. Slow ones (Docker, Milvus
readiness, hook scripts) run on worker threads and report back with an event, so they
never delay an advert. Every failure is logged and counted; none is swallowed silently.

The container and the lease share one ordered worker; every answer carries the id of
the operation it answers. One exception to the order: a kill (StopContainer without
grace) asked while a graceful stop holds that worker also runs at once on its own thread
(_urgent_kill); its answer still comes from the ordered worker, and a graceful stop it
superseded that has not begun yet runs as a kill (the urgent one may have come before a
start in flight had brought the container up). The executor decides
nothing: it gives the lease back only on the machine's ReleaseLease, never on its own,
not even on close (a lease still held at close stays held: see close()).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from havip.config import Config
from havip.errors import AdapterError, HavipError
from havip.model import (
    AcquireLease, Action, AddVip, ContainerReady, ContainerStopped, DelVip, Event, LeaseLost, LeaseReleased,
    LeaseResult,
    Notify, ReleaseLease, SendAdvert, SendGarp, StartContainer, StopContainer,
)


# How long the blunt cleanup waits for the container worker's current task beyond the
# stop's grace: a start's Docker call, well within systemd's WatchdogSec (10 s).
EMERGENCY_WORKER_WAIT = 5.0


class Executor:
    """Turns actions into side effects. `post` delivers events back to the loop."""

    def __init__(self, cfg: Config, *, sock, vips, announcer, runtime=None, milvus_probe=None, lease=None,
                 post: Callable[[Event], None], log, clock: Callable[[], float] = time.monotonic,
                 metrics=None):
        self.cfg = cfg
        self.sock = sock
        self.vips = vips
        self.announcer = announcer
        self.runtime = runtime
        self.milvus_probe = milvus_probe
        self.lease = lease          # StorageLease, EtcdLease, or None
        if lease is not None and hasattr(lease, "on_lost") and lease.on_lost is None:
            # A lease with a TTL (etcd) reports from its keep-alive thread when it can no
            # longer be proven; the machine decides to fence.
            lease.on_lost = lambda reason, lease_id=None: post(LeaseLost(reason, lease_id=lease_id))
        self.post = post
        self.log = log
        self.clock = clock
        self.metrics = metrics
        self.counters: Counter[str] = Counter()
        self.garp_due: list[float] = []
        self._deferred: list[tuple[str, dict]] = []     # log lines held until a batch is applied
        self.vip_attached = False
        self.last_error: str | None = None
        # One worker for the container and the lease, so that acquire, start, stop and
        # release keep their order.
        self._container_pool = ThreadPoolExecutor(1, thread_name_prefix="container")
        self._hook_pool = ThreadPoolExecutor(2, thread_name_prefix="hook")
        self.container_timings: dict[str, float] = {}
        self._adverts: dict[tuple[int, str, str], bytes] = {}
        self._cancel_start = threading.Event()
        self._pending = 0               # container-worker tasks submitted and not finished
        self._pending_lock = threading.Lock()
        # A kill must not wait up to stop_timeout behind a graceful stop on the ordered
        # worker: it also runs at once on its own thread (_urgent_kill), out of order.
        self._urgent_pool = ThreadPoolExecutor(1, thread_name_prefix="container-kill")
        self._graceful_stops = 0        # graceful stops queued or running on the ordered worker
        # The op of the last kill asked: a graceful stop with a smaller op that begins after
        # it was superseded and runs as a kill (the urgent kill may have found nothing
        # running yet: a start in flight before that stop completes after it).
        self._kill_op = 0

    # ------------------------------------------------------------------ dispatch

    def apply(self, actions: tuple[Action, ...], now: float) -> None:
        self._deferred = []
        try:
            self._apply_all(actions, now)
        finally:
            # Logged after the batch: nothing that can block (a journald backlog) stands
            # between the VIP added and the gratuitous ARP.
            for event, fields in self._deferred:
                self.log.info(event, **fields)

    def _apply_all(self, actions: tuple[Action, ...], now: float) -> None:
        for action in actions:
            try:
                self._apply_one(action, now)
            except HavipError as exc:
                self.counters[f"error_{type(action).__name__}"] += 1
                self.last_error = str(exc)
                self.log.error("action_failed", action=type(action).__name__, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - an adapter's bug fails the action, like any failure
                self.counters[f"error_{type(action).__name__}"] += 1
                self.last_error = f"unexpected error: {exc!r}"[:300]
                self.log.error("action_failed", action=type(action).__name__, error=self.last_error, exc_info=exc)

    def _apply_one(self, action: Action, now: float) -> None:
        match action:
            case SendAdvert(priority=prio):
                self.send_advert(prio)
            case AddVip():
                added = self.vips.add()
                self.vip_attached = True
                if added:
                    self._deferred.append(("vip_added", {"addresses": added}))
            case DelVip():
                self.garp_due.clear()
                removed = self.vips.remove()
                self.vip_attached = False
                if removed:
                    self.log.info("vip_removed", addresses=removed)
            case SendGarp():
                g = self.cfg.garp
                self.garp_due = [now + g.delay + i * g.interval for i in range(g.repeat)]
                self.run_garp(now)
            case StartContainer(op=op):
                self._cancel_start.clear()
                self._submit(self._start_container, op)
            case StopContainer(grace=grace, op=op):
                # A start still waiting for Milvus must not hold the stop up (one worker).
                self._cancel_start.set()
                with self._pending_lock:
                    urgent = not grace and self._graceful_stops > 0
                    self._graceful_stops += 1 if grace else 0
                    if not grace and op is not None:
                        self._kill_op = max(self._kill_op, op)
                if urgent:
                    self._urgent_pool.submit(self._urgent_kill, op)
                self._submit(self._stop_container, grace, op)
            case AcquireLease(op=op):
                self._submit(self._acquire_lease, op)
            case ReleaseLease(op=op):
                self._submit(self._release_lease_bounded, op)
            case Notify(state=state, priority=prio):
                self._notify(str(state), prio)

    def _submit(self, fn, *args) -> None:
        with self._pending_lock:
            self._pending += 1

        def run():
            try:
                fn(*args)
            finally:
                with self._pending_lock:
                    self._pending -= 1
        self._container_pool.submit(run)

    def busy(self) -> bool:
        """Container or lease work is queued or running (its answer is still to come)."""
        with self._pending_lock:
            return self._pending > 0

    # ------------------------------------------------------------------ network

    def advert_bytes(self, priority: int, dst: str) -> bytes:
        """The encoded advert, cached: scapy takes milliseconds, a takeover must not."""
        key = (priority, dst, self.sock.source)
        cached = self._adverts.get(key)
        if cached is None:
            cached = self._adverts[key] = self._encode(priority, dst)
        return cached

    def set_config(self, cfg: Config) -> None:
        """A reloaded config: drop the adverts encoded for the old one, encode anew."""
        self.cfg = cfg
        self._adverts.clear()
        self.warm()

    def warm(self) -> None:
        """Encode the adverts and ARP frames we will need before the first timer fires."""
        try:
            self.announcer.prepare(self.cfg.virtual_ipaddresses)
        except (HavipError, AttributeError):
            pass
        if self.sock is None:
            return
        for dst in self.sock.destinations:
            for prio in {self.cfg.priority, 0, 254, 255}:
                try:
                    self.advert_bytes(prio, dst)
                except HavipError:
                    pass

    def _encode(self, priority: int, dst: str) -> bytes:
        from havip.protocol import codec

        try:
            return codec.encode_own(self.cfg, priority, src=self.sock.source, dst=dst)
        except ValueError as exc:
            raise AdapterError(f"cannot build an advert from {self.sock.source or 'no source address'} "
                               f"to {dst}: {exc}") from None

    def send_advert(self, priority: int) -> None:
        if self.sock is None:
            raise AdapterError(f"no socket on {self.cfg.interface}: advert with priority {priority} not sent")
        # VRRPv3's pseudo-header checksum covers the destination: one payload per peer.
        for dst in self.sock.destinations:
            self.sock.send_to(self.advert_bytes(priority, dst), dst)
        self.counters["adverts_sent"] += 1
        if self.metrics:
            self.metrics.adverts_sent.inc()

    def run_garp(self, now: float) -> None:
        """Send the gratuitous ARP / NA frames that are due."""
        due = [t for t in self.garp_due if t <= now]
        if not due:
            return
        self.garp_due = [t for t in self.garp_due if t > now]
        # One announcement per due one: `interval: 0` sends `repeat` at once, as keepalived's
        # garp_interval 0 does; a loop held up past several sends them back to back.
        for _ in due:
            try:
                self.announcer.announce(self.cfg.virtual_ipaddresses)
                self.counters["garp_sent"] += 1
            except HavipError as exc:
                self.counters["error_SendGarp"] += 1
                self.log.error("garp_failed", error=str(exc))
                return

    def next_garp(self) -> float | None:
        return min(self.garp_due) if self.garp_due else None

    # ------------------------------------------------------------------ container (worker thread)

    def _start_container(self, op: int | None = None) -> None:
        t0 = self.clock()
        if self._cancel_start.is_set():
            self.post(ContainerReady(ok=False, reason="the start was cancelled before it began", op=op))
            return
        try:
            self.runtime.start()
            started = self.clock()
            result = self.runtime.wait_ready(self.milvus_probe, self.cfg.milvus.start_timeout,
                                             cancel=self._cancel_start)
            ready = self.clock()
            self.container_timings = {"start": started - t0, "ready": ready - started}
            reason = result.reason if result.ok else result.reason
            msg = (f"container started in {started - t0:.2f}s, Milvus healthy {ready - started:.2f}s later"
                   if result.ok else f"{reason} ({ready - t0:.1f}s after start)")
            self.post(ContainerReady(ok=result.ok, reason=msg, op=op))
        except HavipError as exc:
            self.post(ContainerReady(ok=False, reason=str(exc), op=op))
        except Exception as exc:  # noqa: BLE001 - a worker must always report back
            self.post(ContainerReady(ok=False, reason=f"unexpected error starting the container: {exc!r}", op=op))

    def _stop_container(self, grace: bool = True, op: int | None = None) -> None:
        t0 = self.clock()
        gentle = grace
        if grace and op is not None:
            with self._pending_lock:
                superseded = op < self._kill_op
            if superseded:
                # A kill asked after this stop supersedes it (see _kill_op): the urgent kill
                # may have found nothing running while a start ahead of us was in flight.
                gentle = False
                self.log.warning("graceful_stop_superseded", op=op, kill_op=self._kill_op,
                                 reason="a kill was asked after this graceful stop: it runs without grace")
        try:
            was_running = self.runtime.stop() if gentle else self.runtime.stop(timeout=0)
            took = self.clock() - t0
            self.container_timings["stop"] = took
            what = ("stopped" if gentle else "stopped without grace") if was_running else "was not running"
            # The machine gives the lease back on this answer (ReleaseLease), not us.
            self.post(ContainerStopped(ok=True, reason=f"container {self.cfg.milvus.container} {what} ({took:.2f}s)",
                                       op=op))
        except HavipError as exc:
            self.post(ContainerStopped(ok=False, reason=str(exc), op=op))
        except Exception as exc:  # noqa: BLE001
            self.post(ContainerStopped(ok=False, reason=f"unexpected error stopping the container: {exc!r}", op=op))
        finally:
            if grace:
                with self._pending_lock:
                    self._graceful_stops -= 1

    def _urgent_kill(self, op: int | None) -> None:
        """The kill of StopContainer(grace=False) #op, run at once beside the graceful stop
        that holds the ordered worker (a fence while a master steps down): Milvus dies now,
        not after up to stop_timeout. It posts nothing: the ordered #op, queued behind
        that stop, still runs and is the one answer the machine gets (it then finds the
        container stopped), so the confirmation stays in order behind any start, and the
        graceful stop's own answer is stale. A failure here only costs the head start."""
        t0 = self.clock()
        try:
            was_running = self.runtime.stop(timeout=0)
            self.counters["urgent_kills"] += 1
            self.log.warning("container_killed_out_of_order", op=op, was_running=was_running,
                             took=round(self.clock() - t0, 3),
                             reason="a kill was asked while a graceful stop held the container worker")
        except Exception as exc:  # noqa: BLE001 - the ordered kill behind the stop still runs
            self.counters["error_urgent_kill"] += 1
            self.log.error("urgent_kill_failed", op=op, error=str(exc)[:300],
                           consequence="the kill runs after the graceful stop on the container worker")

    # ------------------------------------------------------------------ lease (container worker)

    def _acquire_lease(self, op: int | None = None) -> None:
        if self.lease is None:
            self.post(LeaseResult(ok=True, reason="no storage lease configured", op=op))
            return
        try:
            res = self.lease.acquire()
        except HavipError as exc:
            self.post(LeaseResult(ok=False, reason=str(exc), holder="(error)", op=op))
            return
        except Exception as exc:  # noqa: BLE001 - a worker must always report back
            self.post(LeaseResult(ok=False, reason=f"unexpected error taking the storage lease: {exc!r}",
                                  holder="(error)", op=op))
            return
        # The backend's lease id (etcd), read on this worker right after the acquire: the
        # machine keeps it with the held lease and tells a stale LeaseLost by it.
        lease_id = getattr(self.lease, "lease_id", None) if res.ok else None
        if res.ok:
            self.log.info("lease_acquired", reason=res.reason)
        self.post(LeaseResult(ok=res.ok, reason=res.reason, holder=res.holder, op=op, lease_id=lease_id))

    def _release_lease_bounded(self, op: int | None = None) -> None:
        """The machine's ReleaseLease (after a confirmed stop), on the worker; a hung storage
        holds the worker up at most release_timeout: our Milvus is stopped, so the peer may
        serve as soon as the storage lets go of the lock (its attempts fail until then)."""
        if self.lease is None:
            self.post(LeaseReleased(ok=True, reason="no storage lease configured", op=op))
            return
        said: list[tuple[bool, str]] = []
        t = threading.Thread(target=lambda: said.append(self._release_lease()), name="lease-release", daemon=True)
        t.start()
        t.join(self.release_timeout)
        if t.is_alive():
            self.counters["error_ReleaseLease"] += 1
            self.log.error("lease_release_slow", timeout=self.release_timeout,
                           consequence="handing over anyway (Milvus is stopped); the peer gets the lease "
                                       "once the storage answers or drops our lock")
            self.post(LeaseReleased(ok=False, op=op, reason=f"the storage did not answer the lease release "
                                                            f"within {self.release_timeout:g}s"))
            return
        ok, reason = said[0] if said else (False, "the lease release ended without an answer")
        self.post(LeaseReleased(ok=ok, reason=reason, op=op))

    @property
    def release_timeout(self) -> float:
        return (self.cfg.milvus.check_timeout if self.cfg.milvus else 1.0) + 1.0

    def _release_lease(self) -> tuple[bool, str]:
        if self.lease is None:
            return True, "no storage lease configured"
        try:
            said = self.lease.release()
        except HavipError as exc:
            self.counters["error_ReleaseLease"] += 1
            self.log.error("lease_release_failed", error=str(exc),
                           consequence="the peer waits for the lease's orphan_timeout before it starts Milvus")
            return False, f"the lease release failed: {exc}"
        if said:
            self.log.info("lease_released", reason=said)
        return True, said or "no lease of ours to release"

    # ------------------------------------------------------------------ hooks

    def _notify(self, state: str, priority: int) -> None:
        script = getattr(self.cfg.notify, state, None)
        if not script:
            return
        argv = [script, state, str(priority), self.cfg.instance]
        self._hook_pool.submit(self._run_hook, argv, self.cfg.notify.timeout)

    def _run_hook(self, argv: list[str], timeout: float) -> None:
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            if res.returncode != 0:
                self.log.warning("hook_failed", argv=argv, rc=res.returncode, stderr=res.stderr[-500:])
            else:
                self.log.info("hook_ran", argv=argv)
        except subprocess.TimeoutExpired:
            self.log.warning("hook_timeout", argv=argv, timeout=timeout)
        except OSError as exc:
            self.log.warning("hook_failed", argv=argv, error=str(exc))

    def emergency_stop(self) -> None:
        """The loop died and the machine could not hand over: do what `havip cleanup`
        does, in its order. The VIP first (no write may reach a Milvus being stopped),
        then the container, then the lease (only after a confirmed stop), then the
        priority-0 advert so the backup takes over after its skew time."""
        steps = [("DelVip", self._emergency_vip), ("StopContainer", self._emergency_container),
                 ("SendAdvert", lambda: self.send_advert(0))]
        stopped = True
        for name, step in steps:
            if name == "StopContainer" and self.runtime is None:
                continue
            if name == "SendAdvert" and not stopped:
                continue                  # Milvus may still run: the backup must not start a second
            try:
                step()
                self.log.warning("emergency_step_done", step=name)
            except Exception as exc:  # noqa: BLE001 - every step is tried
                stopped = stopped and name != "StopContainer"
                self.counters[f"error_{name}"] += 1
                self.log.critical("emergency_step_failed", step=name, error=repr(exc)[:300])

    def _emergency_vip(self) -> None:
        self.garp_due.clear()
        self.vips.remove()
        self.vip_attached = False

    def _emergency_container(self) -> None:
        """Stop on the ordered worker, after any start or acquire in flight there: a stop run
        beside a start that has not reached the engine yet finds nothing running, and that
        Milvus would then start with the lease given back. The lease goes back only after
        that ordered stop; if the worker stays busy (a hung engine), stop here anyway but
        keep the lease and send no priority 0 (a start may still be under way there)."""
        self._cancel_start.set()
        grace = min(self.cfg.milvus.stop_timeout, self.cfg.advert_interval)
        ordered = self._container_pool.submit(self.runtime.stop, timeout=grace)
        try:
            ordered.result(timeout=grace + EMERGENCY_WORKER_WAIT)
        except FutureTimeout:
            self.runtime.stop(timeout=grace)
            raise AdapterError(f"the container worker is still busy after {grace + EMERGENCY_WORKER_WAIT:g}s: a "
                               "start may be under way there; stopped here, the lease is kept") from None
        self._release_lease_bounded()

    def close(self, wait: bool = True) -> None:
        """Stop the workers. Nothing is given back here: the machine releases the lease after
        a confirmed stop (and a lease granted after it stopped, see Daemon.run). A lease still
        held now belongs to a container whose stop was never confirmed (a forced shutdown):
        it stays held, on the storage, until `havip cleanup` stops that container."""
        self._container_pool.shutdown(wait=wait, cancel_futures=not wait)
        self._urgent_pool.shutdown(wait=wait, cancel_futures=not wait)
        self._hook_pool.shutdown(wait=False, cancel_futures=True)
        if self.lease is not None and self.lease.held:
            # An etcd lease is no longer kept alive once the daemon is gone: it lasts its ttl.
            until = "its ttl runs out or " if getattr(self.lease, "backend", None) == "etcd" else ""
            self.log.error("lease_kept", path=getattr(self.lease, "path", None),
                           consequence=f"the container's stop was never confirmed: the lease stays held "
                                       f"until {until}`havip cleanup` stops it")
