"""Run the role's checks on a schedule, off the VRRP timing path, with rise/fall.

The runner owns one thread. Each cycle runs every check of the current role in its
own short-lived thread, bounded by the check's timeout (plus `grace`): a check stuck
in the kernel (hung NFS, wedged engine) becomes a failed result and is not started
again until it returns. The aggregate (every check passed) goes through `Hysteresis`;
when it flips, `on_change(healthy, reason)` is called from the runner thread, where
the daemon only posts an event into its loop.

Fence checks (the master's storage lease) skip the hysteresis: their first failure on
the master calls `on_change(False, reason, fence=True)` at once, because another host may
hold the lease already and every cycle spent waiting for `fall` is a cycle with two
writers (Patroni demotes in the cycle its leader key update fails).

A container that has exited is a settled fact, not a verdict to confirm: the container
check marks that failure `final`, and on the master it is reported after the one round
that saw it (a check that may pass next time still waits for `fall`). Triggers (the
Docker engine's `die` event, havip.checks.watch) `kick()` a round at once, so a killed
container is reported milliseconds after the engine saw it die, not up to
`check_interval x fall` later; at most KICKS_PER_INTERVAL kicks per interval, so that a
flood of events is no busy loop (the rest are left to the schedule).

A storage that hangs is only seen by a write that does not return, so the time from the
fault to the fence is the wait for the next fence check to start plus its deadline. Both
are kept short: on the master the fence checks also run alone halfway between rounds
(every `interval / 2`), their deadline is their `timeout` without the runner's `grace`
(the lease write has no deadline of its own that could still report in the grace), and
the fence fires when that deadline passes, not after the slower checks of the round.
At worst `interval / 2 + timeout` after the fault: 1.5 s with the defaults, within the
`check_interval + 1 s` target (docs/benchmarks-fence.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Protocol, Sequence

import structlog

from havip.checks.probes import CheckResult
from havip.daemon.ratelimit import RateLimiter
from havip.fmt import fmt_seconds

Check = Callable[[], CheckResult]
# Kicked rounds per `interval` at most: a die and an oom are looked at at once, a flood of
# events (an engine that sends them in a loop) must not run the round (a lease write, a
# gRPC connection, threads) in a busy loop. Kicks beyond it are left to the schedule.
KICKS_PER_INTERVAL = 4
SAY_EVERY = 60.0                 # s: refused kicks are said at most once a minute, counted


class Trigger(Protocol):
    """Something that can tell the runner to look now (havip.checks.watch.ContainerWatch)."""

    def start(self, kick: Callable[[str], None]) -> None: ...

    def stop(self) -> None: ...


log = structlog.get_logger("havip.checks")
# A wait for a check that returns this much past its deadline means the process stood still
# (the daemon's loop says `loop_stalled` past 1 s too): the check gets one fresh deadline.
STALL = 1.0


class Hysteresis:
    """Consecutive-result filter: `rise` passes make healthy, `fall` failures unhealthy.

    The initial state is unknown; the first decision comes after `rise` passes or
    `fall` failures in a row. `feed` returns the new state when it changes, else None.
    """

    def __init__(self, rise: int, fall: int):
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be at least 1 (got rise={rise}, fall={fall})")
        self.rise = rise
        self.fall = fall
        self.state: bool | None = None
        self.passes = 0          # consecutive
        self.fails = 0           # consecutive

    def feed(self, ok: bool) -> bool | None:
        if ok:
            self.passes, self.fails = self.passes + 1, 0
            if self.state is not True and self.passes >= self.rise:
                self.state = True        # unknown/unhealthy -> healthy
                return True
        else:
            self.fails, self.passes = self.fails + 1, 0
            if self.state is not False and self.fails >= self.fall:
                self.state = False       # unknown/healthy -> unhealthy
                return False
        return None

    def settle_unhealthy(self) -> bool | None:
        """A failure that needs no confirmation (CheckResult.final): unhealthy at once.
        Returns False if the state changed, else None, like `feed`."""
        self.fails, self.passes = max(self.fails + 1, self.fall), 0
        if self.state is not False:
            self.state = False
            return False
        return None


def _times(n: int) -> str:
    return "1 time" if n == 1 else f"{n} times"


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _unwrap(fn: Callable) -> Callable:
    while hasattr(fn, "func"):           # functools.partial
        fn = fn.func
    return fn


class CheckRunner:
    """Runs `probes_for_role(role)` every `interval` seconds in its own thread.

    A check's deadline is its probe's `timeout` attribute (bound method or partial of
    one), else `default_timeout` (the interval), plus `grace`. Call `start()` to begin,
    `set_role()` when the VRRP role changes, `stop()` at shutdown; `run_once()` runs
    one cycle synchronously (tests drive it with a fake clock).
    """

    def __init__(self, probes_for_role: Callable[[str], list[Check]], interval: float, rise: int, fall: int,
                 on_change: Callable[[bool, str], None], clock: Callable[[], float] = time.monotonic,
                 *, role: str = "backup", default_timeout: float | None = None, grace: float = 0.5,
                 fence: tuple[str, ...] = (), wait: Callable[[float], object] | None = None,
                 join: Callable[[threading.Thread, float], None] | None = None,
                 triggers: Sequence[Trigger] = ()):
        self.probes_for_role = probes_for_role
        self.interval = interval
        self.rise, self.fall = rise, fall
        self.on_change = on_change
        self.clock = clock
        self.default_timeout = interval if default_timeout is None else default_timeout
        self.grace = grace
        self.fence = frozenset(fence)    # names of checks whose failure on the master fences at once
        self.triggers = tuple(triggers)  # started with the runner: each may kick() a round early
        self._lock = threading.RLock()   # on_change runs under it and may call set_role
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy: dict[object, threading.Thread] = {}   # checks still running
        self._names: dict[object, str] = {}
        self._last: list[CheckResult] = []
        self._full_due = True            # the next wake runs every check (a role change asks for one)
        self._kicks: deque[float] = deque(maxlen=KICKS_PER_INTERVAL)   # when the last kicks were taken
        self._kick_lock = threading.Lock()
        self.kicks_refused = 0
        self._say_refused = RateLimiter(SAY_EVERY, burst=1, max_keys=1)
        # How the schedule sleeps and how a check is waited for: real time, or a fake clock's (tests).
        self._wait = wait if wait is not None else self._wake.wait
        self._join = join if join is not None else (lambda t, seconds: t.join(seconds))
        self._install(role)

    # ---------------------------------------------------------------- control

    def _install(self, role: str) -> None:
        checks = list(self.probes_for_role(role))
        with self._lock:
            self.role = role
            self._checks = checks
            self._hyst = Hysteresis(self.rise, self.fall)
            self._fail_streaks: dict[str, int] = {}
            self._generation = getattr(self, "_generation", 0) + 1
            self._fenced = False
            self._last = []

    def kick(self, why: str = "") -> None:
        """Run a full round now instead of at the next interval (from any thread): a
        trigger saw something the checks should look at (the container died). Kicks
        that come while a round is due or running are one round; more than
        KICKS_PER_INTERVAL within one `interval` are refused (counted): the schedule
        looks instead."""
        now = self.clock()
        with self._kick_lock:
            taken = len(self._kicks) < KICKS_PER_INTERVAL or now - self._kicks[0] >= self.interval
            if taken:
                self._kicks.append(now)
            else:
                self.kicks_refused += 1
                say = self._say_refused.allow("kicks", now)
        if taken:
            self._full_due = True
            self._wake.set()
        elif say:
            log.warning("check_kicks_refused", count=self.kicks_refused, reason=why,
                        limit=f"{KICKS_PER_INTERVAL} kicked rounds per {fmt_seconds(self.interval)}",
                        consequence="the checks run on their schedule meanwhile")

    def set_role(self, role: str) -> None:
        """Switch to the checks of `role` ("master"/"backup"); the health becomes unknown
        again, so the next decision is reported even if it equals the previous one."""
        self._install(role)
        self._full_due = True
        self._wake.set()

    @property
    def healthy(self) -> bool | None:
        return self._hyst.state

    def last_results(self) -> list[CheckResult]:
        with self._lock:
            return list(self._last)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="havip-checks", daemon=True)
            self._thread.start()
            for trigger in self.triggers:
                trigger.start(self.kick)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the schedule and wait for the current cycle (a stuck check is left behind)."""
        self._stopping.set()
        self._wake.set()
        for trigger in self.triggers:
            try:
                trigger.stop()
            except Exception:  # noqa: BLE001 - stopping the checks must go on
                log.exception("check trigger failed to stop")
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self._max_deadline() + 1)

    def _loop(self) -> None:
        full_at = self.clock()
        while not self._stopping.is_set():
            began = self.clock()
            full = self._full_due or began >= full_at
            if full:
                self._full_due, full_at = False, began + self.interval
            try:
                self.run_once() if full else self.run_fence_checks()
            except Exception:  # noqa: BLE001 - a bug in one cycle must not end the checks
                log.exception("check cycle failed")
            wake = full_at
            if self._fence_checks() is not None:
                wake = min(wake, began + self.interval / 2)
            left = wake - self.clock()
            if left > 0:
                self._wait(left)
            self._wake.clear()

    def _fence_checks(self) -> list[Check] | None:
        """The fence checks to run between rounds: the master's, until it is fenced."""
        with self._lock:
            if self.role != "master" or self._fenced or not self.fence:
                return None
            checks = [c for c in self._checks if self._name(c) in self.fence]
            return checks or None

    # ---------------------------------------------------------------- one cycle

    def run_once(self) -> bool | None:
        """Run every check once; feed the aggregate; return the new state if it flipped."""
        with self._lock:
            generation, checks, role, fenced = self._generation, list(self._checks), self.role, self._fenced
        results = self._run_all(checks, lambda r: self._fence_if_lost(generation, role, r))
        with self._lock:
            if generation != self._generation:
                return None              # the role changed meanwhile; these results are stale
            self._last = results
            for r in results:
                self._fail_streaks[r.name] = 0 if r.ok else self._fail_streaks.get(r.name, 0) + 1
            if self._fenced and not fenced:
                return False             # this round fenced (on_change already called)
            final = next((r for r in results if not r.ok and r.final), None) if role == "master" else None
            flipped = self._hyst.settle_unhealthy() if final is not None else self._hyst.feed(all(r.ok for r in results))
            if flipped is None:
                return None
            reason = self._sentence(flipped, results, role, final)
            log.info("health changed", healthy=flipped, role=role, reason=reason,
                     **({"final": True, "note": f"an exited container does not come back by itself: "
                                                f"not waiting for {_times(self.fall)} in a row"}
                        if final is not None else {}))
            try:
                self.on_change(flipped, reason)
            except Exception:  # noqa: BLE001 - the daemon's callback failing must be seen, not fatal
                log.exception("health callback failed", healthy=flipped, reason=reason)
            return flipped

    def run_fence_checks(self) -> bool | None:
        """Between rounds, on the master: run the fence checks alone; False if one fenced.
        Their results replace theirs in last_results(); the hysteresis is not fed."""
        checks = self._fence_checks()
        if checks is None:
            return None
        with self._lock:
            generation, role = self._generation, self.role
        results = self._run_all(checks, lambda r: self._fence_if_lost(generation, role, r))
        with self._lock:
            if generation != self._generation:
                return None
            names = {r.name for r in results}
            self._last = [r for r in self._last if r.name not in names] + results
            for r in results:
                self._fail_streaks[r.name] = 0 if r.ok else self._fail_streaks.get(r.name, 0) + 1
            return False if self._fenced else None   # _fence_checks() ran only while not fenced

    def _fence_if_lost(self, generation: int, role: str, result: CheckResult) -> None:
        """Called with each fence check's result as soon as it is known (or its deadline passed)."""
        if result.ok or result.name not in self.fence or role != "master":
            return
        with self._lock:
            if generation == self._generation and not self._fenced:
                self._fence(result)

    def _fence(self, lost: CheckResult) -> bool:
        """Unhealthy at once, without waiting for `fall` (under the lock)."""
        self._fenced = True
        self._hyst.state, self._hyst.passes, self._hyst.fails = False, 0, max(self._hyst.fails, self.fall)
        reason = f"{lost.name} check failed: {lost.reason}"
        log.warning("fence", role="master", reason=reason)
        try:
            self.on_change(False, reason, fence=True)
        except Exception:  # noqa: BLE001 - the daemon's callback failing must be seen, not fatal
            log.exception("health callback failed", healthy=False, reason=reason)
        return False

    def _sentence(self, healthy: bool, results: list[CheckResult], role: str,
                  final: CheckResult | None = None) -> str:
        if final is not None:   # the same sentence: `fall` was not waited for (logged as final)
            return f"{final.name} check failed {_times(self._fail_streaks[final.name])}: {final.reason}"
        if not results:
            return f"role {role} has no checks, so it counts as healthy"
        if healthy:
            names = [r.name for r in results]
            noun = "check" if len(names) == 1 else "checks"
            return f"{_and(names)} {noun} passed {_times(self._hyst.passes)} in a row"
        bad = next(r for r in results if not r.ok)
        return f"{bad.name} check failed {_times(self._fail_streaks[bad.name])}: {bad.reason}"

    def _timeout_of(self, check: Callable) -> float:
        fn = _unwrap(check)
        t = getattr(fn, "timeout", None)
        if t is None:
            t = getattr(getattr(fn, "__self__", None), "timeout", None)
        return float(t) if t is not None else self.default_timeout

    def _max_deadline(self) -> float:
        return max((self._timeout_of(c) for c in self._checks), default=0.0) + self.grace

    @staticmethod
    def _key(check: Callable) -> object:
        # Bound methods are new objects on every attribute access; key them by owner.
        fn = _unwrap(check)
        owner = getattr(fn, "__self__", None)
        return (id(owner), getattr(fn, "__func__", fn)) if owner is not None else id(check)

    def _name(self, check: Callable) -> str:
        fn = _unwrap(check)
        return self._names.get(self._key(check)) or getattr(fn, "check_name", None) or getattr(fn, "__name__", "check")

    def _run_all(self, checks: list[Check],
                 on_fence_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
        """Start every check, then wait for each until its deadline: fence checks first
        (their deadline has no grace), each reported to `on_fence_result` at once."""
        started = self.clock()
        boxes: list[list[CheckResult]] = []
        threads: list[threading.Thread | None] = []
        for check in checks:
            key, box = self._key(check), []
            boxes.append(box)
            if key in self._busy and self._busy[key].is_alive():
                threads.append(None)     # still stuck from an earlier cycle: do not pile up
                continue
            t = threading.Thread(target=self._call, args=(check, box), name="havip-check", daemon=True)
            self._busy[key] = t
            threads.append(t)
            t.start()
        fences = [self._name(c) in self.fence for c in checks]
        order = sorted(range(len(checks)), key=lambda i: not fences[i])
        results: list[CheckResult | None] = [None] * len(checks)
        for i in order:
            check, box, t = checks[i], boxes[i], threads[i]
            timeout = self._timeout_of(check)
            if t is not None:
                deadline = started + timeout + (0.0 if fences[i] else self.grace)
                self._join(t, max(0.0, deadline - self.clock()))
                if not box and self.clock() - deadline > STALL:
                    # The runner looked long after the deadline: the process stood still
                    # (SIGSTOP, a paused VM, swap), the check's thread with it, which has not
                    # had its time. One fresh deadline, not a fence for our own stall.
                    self._join(t, timeout)
            now = self.clock()
            if box:
                self._names[self._key(check)] = box[0].name
                results[i] = box[0]
            elif t is None:
                results[i] = CheckResult(self._name(check), False,
                                         f"{self._name(check)} check is still stuck in an earlier run", 0.0, now)
            else:
                results[i] = CheckResult(self._name(check), False,
                                         f"{self._name(check)} check did not finish within "
                                         f"{fmt_seconds(timeout)}", now - started, now)
            if fences[i] and on_fence_result is not None:
                on_fence_result(results[i])
        return results   # type: ignore[return-value] - every slot is filled above

    def _call(self, check: Check, box: list[CheckResult]) -> None:
        t0 = self.clock()
        try:
            box.append(check())
        except Exception as exc:  # noqa: BLE001 - a raising probe is a failed check with its reason
            now = self.clock()
            box.append(CheckResult(self._name(check), False,
                                   f"{self._name(check)} check raised {type(exc).__name__}: {exc}", now - t0, now))
