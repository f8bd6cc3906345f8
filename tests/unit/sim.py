"""Two hosts on one link and one shared storage, modelled as the real executor behaves.

Each host has ONE ordered worker (havip.daemon.executor: container and lease share it):
a start, a stop, an acquire or a release waits for the operations queued before it and
takes its own time (`*_delay`, or a random draw when `rng` is given), except a kill asked
while a graceful stop is out: it also kills at once, as the executor's `_urgent_kill`. A StopContainer
cancels a start that has not begun or is still waiting for Milvus, as the executor's
`_cancel_start` does. The storage lease is one flock-like holder; it is released only by
a ReleaseLease the machine emits (never by the simulator on its own). Answers carry the
operation id of their action; with `rng`, some arrive late and some twice. Adverts reach
the other host after LATENCY unless `partitioned`; VRRPv2 drops an advert whose interval
differs from its own (RFC 3768 7.1), as havip's receiver does, so reloads matter.

Invariants are checked after every event and recorded, never assumed:
- `overlaps`: both containers may be running at that moment;
- `violations`: a container running on a host that does not hold the lease (with a
  lease), a priority-0 advert while the sender's container runs, a VIP on a host whose
  Milvus is not the lease holder's (or while the other host's Milvus runs).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field, replace

from havip.core.machine import Decision, Machine, Params, next_deadline, step
from havip.model import (
    AcquireLease, AddVip, Advert, AdvertReceived, ContainerReady, ContainerStopped, DelVip, Event,
    LeaseReleased, LeaseResult, ParamsChanged, ReleaseLease, SendAdvert, StartContainer, StopContainer, Tick,
)

LATENCY = 0.005
VIPS = ("10.0.0.100",)


@dataclass
class Op:
    kind: str                 # start | stop | acquire | release
    op: int | None
    grace: bool = True
    began: float | None = None
    token: int = 0            # the completion event scheduled for it


@dataclass
class Host:
    name: str
    p: Params
    m: Machine = field(default_factory=Machine)
    running: bool = False          # the container process is up (docker start began, no stop since)
    leftover: bool = False         # running, but started before havip (the old recipe's): no lease
    vip: bool = False
    start_delay: float = 5.0
    stop_delay: float = 2.0
    acquire_delay: float = 0.0
    release_delay: float = 0.0
    ready_ok: bool = True
    stop_ok: bool = True           # False: the engine hangs, every stop fails
    cancel_start: bool = False
    queue: deque = field(default_factory=deque)
    current: Op | None = None
    decisions: list[Decision] = field(default_factory=list)
    last_op: int = 0               # kept for older tests


@dataclass(frozen=True)
class _Done:
    """Internal: the worker finished the operation with this token."""

    token: int


class Sim:
    def __init__(self, a: Params, b: Params, rng: random.Random | None = None) -> None:
        self.hosts = [Host("a", a), Host("b", b)]
        self.queue: list[tuple[float, int, int, object]] = []
        self.seq = itertools.count()
        self.tokens = itertools.count(1)
        self.now = 0.0
        self.overlaps: list[float] = []
        self.violations: list[str] = []
        self.partitioned = False
        self.lease_holder: int | None = None
        self.rng = rng
        self.armed: list[float | None] = [None, None]
        self.log: list[str] = []

    @property
    def a(self) -> Host:
        return self.hosts[0]

    @property
    def b(self) -> Host:
        return self.hosts[1]

    def at(self, t: float, host: int, event) -> None:
        heapq.heappush(self.queue, (t, next(self.seq), host, event))

    def reload(self, t: float, host: int, **changes) -> None:
        """SIGHUP at `t` with new params (e.g. interval=5.0)."""
        self.at(t, host, ("reload", changes))

    # ------------------------------------------------------------------ the loop

    def run_until(self, end: float) -> None:
        while self.queue and self.queue[0][0] <= end:
            t, _, i, ev = heapq.heappop(self.queue)
            h = self.hosts[i]
            if isinstance(ev, Tick):
                if self.armed[i] != t:
                    continue  # superseded
                self.armed[i] = None
            self.now = t
            if isinstance(ev, _Done):
                self._done(i, ev.token, t)
            elif isinstance(ev, tuple) and ev[0] == "reload":
                h.p = replace(h.p, **ev[1])
                self._feed(i, ParamsChanged(), t)
            else:
                if isinstance(ev, AdvertReceived) and h.p.version == 2 and ev.advert.interval != h.p.interval:
                    continue  # RFC 3768 7.1: dropped (interval mismatch)
                self._feed(i, ev, t)
            self._check(t)
        self.now = max(self.now, end)

    def _feed(self, i: int, ev: Event, t: float) -> None:
        from tests.unit.test_machine import check_decision

        h = self.hosts[i]
        d = step(h.m, h.p, ev, t)
        check_decision(h.m, d, ev)
        h.m = d.machine
        h.decisions.append(d)
        for a in d.actions:
            self._apply(i, a, t)
        nd = next_deadline(h.m)
        # A deadline at or before a tick that has just run would spin the loop forever.
        if nd is not None and not (isinstance(ev, Tick) and nd <= t) and nd != self.armed[i]:
            self.armed[i] = max(nd, t)
            self.at(self.armed[i], i, Tick())

    def _apply(self, i: int, a, t: float) -> None:
        h = self.hosts[i]
        other = self.hosts[1 - i]
        if isinstance(a, SendAdvert):
            if a.priority == 0 and h.running:
                self.violations.append(f"{t:.3f} {h.name}: priority 0 while its container runs")
            if h.m.link_up and not self.partitioned:
                adv = Advert(version=h.p.version, vrid=51, priority=a.priority, interval=h.p.interval,
                             addresses=VIPS, src=h.p.address)
                self.at(t + LATENCY, 1 - i, AdvertReceived(adv))
        elif isinstance(a, AddVip):
            h.vip = True
        elif isinstance(a, DelVip):
            h.vip = False
        elif isinstance(a, StartContainer):
            h.cancel_start = False
            self._enqueue(i, Op("start", a.op), t)
        elif isinstance(a, StopContainer):
            h.cancel_start = True
            cur = h.current
            if cur is not None and cur.kind == "start":
                self._finish_start_now(i, t)     # wait_ready sees the cancel and gives up
            if not a.grace:
                self._urgent_kill(i, t)
            self._enqueue(i, Op("stop", a.op, grace=a.grace), t)
        elif isinstance(a, AcquireLease):
            self._enqueue(i, Op("acquire", a.op), t)
        elif isinstance(a, ReleaseLease):
            self._enqueue(i, Op("release", a.op), t)
        del other

    # ------------------------------------------------------------------ the worker

    def _delay(self, h: Host, kind: str) -> float:
        base = {"start": h.start_delay, "stop": h.stop_delay if h.running else 0.01,   # nothing to stop: quick
                "acquire": h.acquire_delay, "release": h.release_delay}[kind]
        if self.rng is None:
            return base
        return base * self.rng.uniform(0.2, 1.5) + self.rng.choice([0.0, 0.0, 0.01, 0.3])

    def _enqueue(self, i: int, op: Op, t: float) -> None:
        h = self.hosts[i]
        h.queue.append(op)
        if h.current is None:
            self._begin_next(i, t)

    def _begin_next(self, i: int, t: float) -> None:
        h = self.hosts[i]
        if h.current is not None or not h.queue:
            return
        op = h.current = h.queue.popleft()
        op.began = t
        op.token = next(self.tokens)
        if op.kind == "start":
            if h.cancel_start:
                self._answer(i, t, ContainerReady(ok=False, reason="cancelled before it began", op=op.op))
                h.current = None
                self._begin_next(i, t)
                return
            h.running = True                 # docker start: the process is up from here
            h.last_op += 1
        self.at(t + self._delay(h, op.kind), i, _Done(op.token))

    def _urgent_kill(self, i: int, t: float) -> None:
        """Executor._urgent_kill: a kill asked while a graceful stop is queued or running
        runs at once, out of order, and answers nothing; the graceful stop then returns
        soon (its container is gone) and the ordered kill confirms."""
        h = self.hosts[i]
        graceful = [op for op in ([h.current] if h.current else []) + list(h.queue) if op.kind == "stop" and op.grace]
        if not graceful or not h.stop_ok:
            return
        h.running = h.leftover = False
        cur = h.current
        if cur is not None and cur.kind == "stop" and cur.grace:
            cur.token = next(self.tokens)
            self.at(t + 0.01, i, _Done(cur.token))

    def _finish_start_now(self, i: int, t: float) -> None:
        h = self.hosts[i]
        op = h.current
        self._answer(i, t, ContainerReady(ok=False, reason="start cancelled by a stop", op=op.op))
        h.current = None
        self._begin_next(i, t)

    def _done(self, i: int, token: int, t: float) -> None:
        h = self.hosts[i]
        op = h.current
        if op is None or op.token != token:
            return  # a start cancelled meanwhile
        h.current = None
        if op.kind == "start":
            ok = h.ready_ok and h.running and not h.cancel_start
            self._answer(i, t, ContainerReady(ok=ok, reason="ready" if ok else "never healthy", op=op.op))
        elif op.kind == "stop":
            if h.stop_ok:
                h.running = h.leftover = False
                h.last_op += 1
                self._answer(i, t, ContainerStopped(ok=True, reason="stopped", op=op.op))
            else:
                self._answer(i, t, ContainerStopped(ok=False, reason="docker: timeout", op=op.op))
        elif op.kind == "acquire":
            free = self.lease_holder in (None, i)
            if free:
                self.lease_holder = i
            self._answer(i, t, LeaseResult(ok=free, reason="lease", holder=None if free else "other", op=op.op))
        elif op.kind == "release":
            if self.lease_holder == i:
                self.lease_holder = None
            self._answer(i, t, LeaseReleased(ok=True, reason="released", op=op.op))
        self._begin_next(i, t)

    def _answer(self, i: int, t: float, ev: Event) -> None:
        late = 0.0
        if self.rng is not None:
            late = self.rng.choice([0.0, 0.0, 0.0, 0.001, 0.2, 1.5])
            if self.rng.random() < 0.1:      # the same answer twice (a retried post)
                self.at(t + late + self.rng.uniform(0.0, 2.0), i, ev)
        self.at(t + late, i, ev)

    # ------------------------------------------------------------------ invariants

    def _check(self, t: float) -> None:
        a, b = self.hosts
        if a.running and b.running:
            self.overlaps.append(t)
        leased = a.p.lease and b.p.lease
        for i, h in enumerate(self.hosts):
            other = self.hosts[1 - i]
            if leased and h.running and not h.leftover and self.lease_holder != i:
                self.violations.append(f"{t:.3f} {h.name}: container runs without the lease")
            if h.vip and other.running:
                self.violations.append(f"{t:.3f} {h.name}: VIP here while {other.name}'s Milvus runs")
            if h.vip and leased and self.lease_holder != i:
                self.violations.append(f"{t:.3f} {h.name}: VIP here but the lease is {self.lease_holder}'s")
