"""Properties of the VRRP state machine over random event sequences (hypothesis).

One machine: random Params and a random stream of events at increasing `now`, with the
invariants checked after every step. Two machines: tests/unit/test_sim_props.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from havip.core.machine import (
    TAKEOVER_PRIORITY, YIELD_PRIORITY, Container, Machine, Params, check_role, next_deadline, step,
)
from havip.model import (
    AcquireLease, AddVip, ContainerReady, ContainerStopped, DelVip, Event, FailoverRequested,
    HealthChanged, LeaseLost, LeaseReleased, LeaseResult, LinkChanged, PauseChanged, SendAdvert, Shutdown,
    StartContainer, Startup, State, StopContainer, Tick,
)
from tests.unit.test_machine import advert, check_decision

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OURS = "10.0.0.5"
PEERS = ("10.0.0.1", "10.0.0.9", "10.0.0.10")
AT_DEADLINE = "tick at the next deadline"   # a Tick exactly when the machine asked for one


@st.composite
def machine_params(draw) -> Params:
    version = draw(st.sampled_from([2, 3]))
    interval = float(draw(st.integers(1, 3))) if version == 2 else draw(st.sampled_from([0.1, 0.5, 1.0, 2.0]))
    return Params(
        version=version,
        priority=draw(st.integers(1, 255)),
        interval=interval,
        preempt=draw(st.booleans()),
        preempt_delay=draw(st.sampled_from([0.0, 0.0, 5.0])),
        address=OURS,
        supervise=draw(st.booleans()),
        garp_refresh=draw(st.sampled_from([0.0, 5.0])),
        lease=draw(st.booleans()),
    )


@dataclass(frozen=True)
class Verdict:
    """A HealthChanged for whatever role the machine is in when it arrives (not stale)."""

    healthy: bool


@dataclass(frozen=True)
class Chatter:
    """A live peer: `count` adverts of `priority`, one per our interval, with our Ticks due between."""

    priority: int
    count: int
    src: str


@dataclass(frozen=True)
class Quiet:
    """Nobody talks for `seconds`; the machine gets every Tick it asks for."""

    seconds: float


def events(p: Params, peer_prios: list[int]) -> st.SearchStrategy:
    # Mostly a steady peer (its priority, or 0 when it resigns), sometimes anything at all.
    prio = st.one_of(st.sampled_from([*peer_prios, 0]), st.sampled_from([*peer_prios, 0]),
                     st.integers(0, 255), st.sampled_from([p.priority, TAKEOVER_PRIORITY, 255]))
    adverts = st.builds(
        lambda pr, src, iv: advert(pr, src=src, interval=iv if p.version == 3 else p.interval,
                                   version=p.version),
        prio, st.sampled_from(PEERS), st.sampled_from([p.interval, p.interval, 0.5, 5.0]),
    )
    ticks = st.sampled_from([Tick(), AT_DEADLINE, AT_DEADLINE])
    chatter = st.builds(Chatter, st.sampled_from([*peer_prios, 0]), st.integers(1, 12), st.sampled_from(PEERS))
    quiet = st.builds(Quiet, st.sampled_from([0.5, 2.0, 5.0, 20.0]))
    return st.one_of(
        ticks, ticks, adverts, adverts, chatter, chatter, quiet,
        st.builds(Verdict, st.booleans()),
        st.builds(HealthChanged, healthy=st.booleans(), reason=st.just("check"),
                  role=st.sampled_from(["master", "backup", "none"])),
        st.builds(ContainerReady, ok=st.sampled_from([True, True, False]), reason=st.just("ready?")),
        st.builds(ContainerStopped, ok=st.sampled_from([True, True, False]), reason=st.just("stopped?")),
        st.builds(LinkChanged, up=st.sampled_from([True, True, False])),
        st.builds(FailoverRequested, force=st.booleans()),
        st.builds(PauseChanged, paused=st.booleans()),
        st.builds(LeaseResult, ok=st.booleans(), reason=st.just("lease?"),
                  holder=st.sampled_from([None, "other-host"]), lease_id=st.sampled_from([None, 0x1a, 0x2b])),
        # etcd's keep-alive: a loss about the held lease, another one, or unnamed.
        st.builds(LeaseLost, reason=st.just("lost?"), lease_id=st.sampled_from([None, 0x1a, 0x2b])),
        st.builds(LeaseReleased, ok=st.booleans(), reason=st.just("released?")),
    )


@st.composite
def scenarios(draw) -> tuple[Params, list[tuple[Event | str, float]]]:
    p = draw(machine_params())
    near = st.integers(max(1, p.priority - 30), min(255, p.priority + 30))
    peer_prios = draw(st.lists(st.one_of(st.integers(1, 255), near), min_size=1, max_size=2))
    dt = st.one_of(st.just(0.0), st.floats(0.0, 0.5), st.floats(0.0, 6.0))
    steps = draw(st.lists(st.tuples(events(p, peer_prios), dt), max_size=60))
    # At most one Shutdown in the middle: a stopped machine must then shrug off the rest.
    at = draw(st.one_of(st.none(), st.none(), st.integers(0, len(steps))))
    if at is not None:
        steps.insert(at, (Shutdown(), draw(dt)))
    return p, steps


@dataclass
class Observer:
    """Applies events and keeps what the invariants need from the action history."""

    p: Params
    m: Machine = field(default_factory=Machine)
    now: float = 0.0
    last_vip: type | None = None
    maybe_running: bool = False     # StartContainer emitted, no ContainerStopped(ok) since
    acquiring: bool = False         # AcquireLease emitted, no LeaseResult since
    lost: set = field(default_factory=set)   # etcd lease ids a LeaseLost named: never valid again
    stuck_ticks: list[tuple[float, float]] = field(default_factory=list)

    def apply(self, ev: Event | Verdict | Chatter | Quiet | str, dt: float = 0.0) -> None:
        self.now += dt
        if isinstance(ev, Chatter):
            for _ in range(ev.count):
                self._ticks_until(self.now + self.p.interval)
                self.apply(advert(ev.priority, src=ev.src, interval=self.p.interval, version=self.p.version))
            return
        if isinstance(ev, Quiet):
            self._ticks_until(self.now + ev.seconds)
            return
        if ev == AT_DEADLINE:
            nd = next_deadline(self.m)
            self.now = max(self.now, nd) if nd is not None else self.now
            ev = Tick()
        elif isinstance(ev, Verdict):
            ev = HealthChanged(healthy=ev.healthy, reason="check", role=check_role(self.m))
        old = self.m
        d = step(old, self.p, ev, self.now)
        check_decision(old, d, ev)
        self.m = m = d.machine
        if isinstance(ev, ContainerStopped) and ev.ok:
            self.maybe_running = False
        if isinstance(ev, LeaseResult):
            self.acquiring = False
        if isinstance(ev, LeaseLost) and ev.lease_id is not None:
            self.lost.add(ev.lease_id)
        if (isinstance(ev, LeaseLost) and old.state == State.MASTER and old.leaving is None
                and old.container in (Container.STARTING, Container.RUNNING) and old.lease_held
                and ev.lease_id in (None, old.lease.lease_id)):
            # 8. the loss of the lease our Milvus runs on fences at once
            assert any(isinstance(a, StopContainer) and not a.grace for a in d.actions), "lease lost, no fence"
        for a in d.actions:
            if isinstance(a, (AddVip, DelVip)):
                self.last_vip = type(a)
            elif isinstance(a, StartContainer):
                # 2. Milvus starts only on a master that is not on its way out.
                assert self.p.supervise and m.state == State.MASTER and m.leaving is None
                # 7. with a storage lease, only once the lease is ours
                assert not self.p.lease or (isinstance(ev, LeaseResult) and ev.ok), \
                    "Milvus started without the storage lease"
                # 9. never on an etcd lease already reported lost
                assert not self.p.lease or m.lease.lease_id not in self.lost, "Milvus started on a lost lease"
                self.maybe_running = True
            elif isinstance(a, AcquireLease):
                # (or the start-up guard: the lease held while a leftover container stops)
                assert self.p.lease and (m.container == Container.LEASING
                                         or isinstance(ev, Startup) and m.container == Container.STOPPING)
                self.acquiring = True
            elif isinstance(a, SendAdvert):
                # 6. the priorities a machine may put on the wire
                # (YIELD_PRIORITY: a master in name only, without preemption, until the lease is ours)
                yielding = {YIELD_PRIORITY} if self.p.lease and not self.p.preempt and not m.lease_held else set()
                assert a.priority in {0, self.p.priority, TAKEOVER_PRIORITY, 255} | yielding
                assert m.link_up or a.priority != 0, "no resignation on a link that is down"
                if a.priority == 0 and self.p.supervise:
                    # 3. single writer: resign only once our Milvus is confirmed stopped
                    assert not self.maybe_running, "priority 0 sent before a confirmed stop"
        # 1. the VIP: never held outside MASTER; held by a master that is not leaving, except
        #    while its Milvus waits for the old master (both would answer ARP for it)
        if (m.state != State.MASTER or m.container in (Container.WAITING, Container.LEASING, Container.STOPPING)
                or m.leaving is not None):
            assert self.last_vip is not AddVip
        else:
            assert self.last_vip is AddVip
        # the machine's belief about its container agrees with its state
        if m.state != State.MASTER:
            assert m.container in (Container.STOPPED, Container.STOPPING)
        elif self.p.supervise and m.leaving is None:
            # (STOPPING: a leftover found at start-up, its stop still pending behind the gate)
            assert m.container in (Container.WAITING, Container.LEASING, Container.STARTING, Container.RUNNING,
                                   Container.STOPPING)
        if m.container == Container.WAITING:
            assert m.gate_deadline is not None, "a gate without a deadline could wait forever"
        if m.container == Container.LEASING:
            assert self.p.lease
            assert self.acquiring or m.lease_retry_deadline is not None, "a lease nobody will try again"
        # timers that belong to each state
        if m.state == State.MASTER:
            assert m.adver_deadline is not None and m.master_down_deadline is None
        elif m.state == State.BACKUP and m.leaving == State.STOPPED:
            # shutting down with a stop pending: no takeover while it waits
            assert m.master_down_deadline is None and m.adver_deadline is None
        elif m.state == State.BACKUP:
            assert m.master_down_deadline is not None and m.adver_deadline is None
        else:
            assert m.master_down_deadline is None and m.adver_deadline is None
        assert check_role(m) in ("master", "backup", "none")
        # 5. the loop can always ask when to wake up
        nd = next_deadline(m)
        assert nd is None or isinstance(nd, float)
        if isinstance(ev, Tick) and nd is not None and nd <= self.now:
            self.stuck_ticks.append((self.now, nd))

    def _ticks_until(self, end: float) -> None:
        """Every Tick the machine asks for up to `end`, then the clock stands at `end`."""
        for _ in range(1000):
            nd = next_deadline(self.m)
            if nd is None or nd > end or (nd <= self.now and self.stuck_ticks):
                break  # (the last case: a deadline stuck in the past, already recorded)
            self.apply(Tick(), max(nd, self.now) - self.now)
        self.now = end


@PROPS
@given(scenarios())
def test_invariants_hold_for_any_event_sequence(scenario):
    p, steps = scenario
    obs = Observer(p)
    obs.apply(Startup(interface_up=True))
    for ev, dt in steps:
        obs.apply(ev, dt)
    # 4. Shutdown, then as many confirmed stops as needed, ends in STOPPED.
    obs.apply(Shutdown(), 0.1)
    for _ in range(3):
        if obs.m.state == State.STOPPED:
            break
        obs.apply(ContainerStopped(ok=True, reason="exited"), 0.5)
        obs.apply(LeaseReleased(ok=True, reason="released"), 0.1)
    assert obs.m.state == State.STOPPED
    assert obs.last_vip is not AddVip


@PROPS
@given(machine_params(), st.booleans())
def test_startup_is_backup_fault_or_owner_master(p, link_up):
    obs = Observer(p)
    obs.apply(Startup(interface_up=link_up))
    if not link_up:
        assert obs.m.state == State.FAULT
    elif p.priority == 255:
        assert obs.m.state == State.MASTER
    else:
        assert obs.m.state == State.BACKUP


@settings(PROPS, derandomize=True, phases=[Phase.explicit, Phase.generate])  # no shrinking: it only has to fail
@given(scenarios())
def test_regression_no_deadline_is_left_in_the_past_after_a_tick(scenario):
    p, steps = scenario
    obs = Observer(p)
    obs.apply(Startup(interface_up=True))
    for ev, dt in steps:
        obs.apply(ev, dt)
    assert obs.stuck_ticks == []
    obs.apply(Shutdown(), 0.1)
    for _ in range(3):
        if obs.m.state == State.STOPPED:
            break
        obs.apply(ContainerStopped(ok=True, reason="exited"), 0.5)
        obs.apply(LeaseReleased(ok=True, reason="released"), 0.1)
    assert obs.m.state == State.STOPPED
    assert next_deadline(obs.m) is None, "a stopped machine still asks to be woken"


# Two hosts, one Milvus: tests/unit/test_sim_props.py, over the simulator that behaves like
# the real executor (tests/unit/sim.py), with priorities 1..255 (the owner included).
