"""The VRRP state machine, one scenario per test, on a fake clock (`now` is passed in).

Every Decision goes through `Run.do`, which also checks the transition contract: a
transition carries a non-empty reason sentence, that sentence becomes `machine.reason`,
and the actions end with one Notify for the new state. `Pair` (tests/unit/sim.py) puts two
machines on one link and one storage, each with one ordered worker like the real executor,
to check the single-writer promise of the module docstring end to end.

Tests named test_regression_* pin bugs that were found here and fixed in havip/core/machine.py;
they must keep passing.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from havip.core.machine import (
    LEASE_RETRY, STOP_RETRY, TAKEOVER_PRIORITY, YIELD_PRIORITY, Container, Decision, Machine, Params,
    advertised_priority, check_role, effective_priority, master_down,
    Running, Starting, Stopping, Waiting, next_deadline, step,
)
from havip.model import (
    AcquireLease, AddVip, Advert, AdvertReceived, ContainerReady, ContainerStopped, DelVip, Event,
    FailoverRequested, HealthChanged, LeaseResult, LinkChanged, Notify, PauseChanged, ReleaseLease,
    SendAdvert, SendGarp, Shutdown, StartContainer, Startup, State, StopContainer, Tick,
)

OURS, PEER = "10.0.0.5", "10.0.0.9"
VIPS = ("10.0.0.100",)
MD_91 = 3 + 165 / 256          # v2, priority 91, interval 1: 3.64453125 s (RFC 3768 6.1)
MD_150 = 3 + 106 / 256         # v2, priority 150, interval 1: 3.4140625 s


def params(**kw) -> Params:
    kw = {"version": 2, "priority": 91, "interval": 1.0, "address": OURS, **kw}
    return Params(**kw)


def advert(priority: int, src: str = PEER, interval: float = 1.0, version: int = 2) -> AdvertReceived:
    return AdvertReceived(Advert(version=version, vrid=51, priority=priority, interval=interval,
                                 addresses=VIPS, src=src))


def check_decision(old: Machine, d: Decision, event: Event | None = None) -> None:
    """The contract every Decision keeps, whatever the event."""
    notifies = [a for a in d.actions if isinstance(a, Notify)]
    if d.transition is None:
        assert d.machine.state == old.state, "state changed without a transition"
        assert notifies == []
        return
    frm, to = d.transition
    # Startup begins a new life whatever came before: its transitions start from INIT.
    assert frm == (State.INIT if isinstance(event, Startup) else old.state)
    assert to == d.machine.state
    assert isinstance(d.reason, str) and d.reason.strip(), "a transition needs its sentence"
    assert d.machine.reason == d.reason
    assert d.machine.since is not None
    assert len(notifies) == 1 and notifies[0].state == to
    assert d.actions[-1] == notifies[0], "Notify runs after the actions that made the state true"


class Run:
    """One machine on a fake clock; `do` applies an event and checks the Decision."""

    def __init__(self, p: Params, now: float = 0.0, interface_up: bool = True) -> None:
        self.p = p
        self.m = Machine()
        self.now = now
        self.decisions: list[Decision] = []
        self.first = self.do(Startup(interface_up=interface_up), now)

    def do(self, event: Event, now: float | None = None) -> Decision:
        if now is not None:
            assert now >= self.now, "the fake clock only moves forward"
            self.now = now
        d = step(self.m, self.p, event, self.now)
        check_decision(self.m, d, event)
        self.m = d.machine
        self.decisions.append(d)
        return d

    def tick(self, now: float) -> Decision:
        return self.do(Tick(), now)

    @property
    def state(self) -> State:
        return self.m.state

    def sent(self) -> list[int]:
        """Priorities of every advert sent so far."""
        return [a.priority for d in self.decisions for a in d.actions if isinstance(a, SendAdvert)]


def took_over(p: Params) -> Run:
    """A machine that became master because nobody advertised within master_down."""
    r = Run(p)
    if p.supervise:
        r.do(ContainerStopped(ok=True, reason="no stale container"), 0.0)
    d = r.tick(master_down(r.m, p))
    assert d.transition == (State.BACKUP, State.MASTER)
    if p.supervise:
        # Nobody was heard since start-up: Milvus waits one advert interval, in case
        # another host is electing itself at the same moment.
        assert r.m.container == Container.WAITING
        d = r.tick(r.now + p.interval)
        assert StartContainer() in d.actions
    return r


def serving(p: Params) -> Run:
    """A supervising master whose Milvus is up."""
    r = took_over(replace(p, supervise=True))
    d = r.do(ContainerReady(ok=True, reason="healthz ok"), r.now + 5)
    assert r.m.container == Container.RUNNING, d
    return r


# ---------------------------------------------------------------- RFC timing through the machine


@pytest.mark.parametrize("version, priority, interval, expected", [
    (2, 91, 1.0, 3.64453125),                     # 3*1 + (256-91)/256 (RFC 3768 6.1)
    (2, 100, 1.0, 3 + 156 / 256),
    (2, 254, 1.0, 3 + 2 / 256),
    (2, 100, 3.0, 9 + 156 / 256),                 # v2 skew does not scale with the interval
    (3, 100, 1.0, 3 + 156 / 256),
    (3, 100, 0.5, 1.5 + 156 * 0.5 / 256),         # v3 skew scales (RFC 5798 6.1)
])
def test_startup_master_down_interval(version, priority, interval, expected):
    r = Run(params(version=version, priority=priority, interval=interval), now=10.0)
    assert r.m.master_down_deadline == pytest.approx(10.0 + expected, abs=1e-12)
    assert next_deadline(r.m) == r.m.master_down_deadline


# ---------------------------------------------------------------- startup


def test_startup_becomes_backup_and_removes_a_stale_vip():
    r = Run(params(), now=0.0)
    assert r.first.transition == (State.INIT, State.BACKUP)
    assert r.first.actions == (DelVip(), Notify(State.BACKUP, 91))
    assert r.m.master_down_deadline == MD_91 == 3.64453125
    assert "waiting 3.64s for a master's advert" in r.first.reason
    assert r.m.started_at == 0.0 and r.m.adver_deadline is None


def test_startup_supervising_backup_stops_a_stale_container():
    r = Run(params(supervise=True))
    assert r.first.actions == (DelVip(), StopContainer(), Notify(State.BACKUP, 91))
    assert r.m.container == Container.STOPPING
    r.do(ContainerStopped(ok=True, reason="stopped"), 0.5)
    assert r.m.container == Container.STOPPED
    assert r.state == State.BACKUP


def test_startup_interface_down_is_fault():
    r = Run(params(), interface_up=False)
    assert r.first.transition == (State.INIT, State.FAULT)
    assert "interface eth0 is down" in r.first.reason
    assert DelVip() in r.first.actions
    assert next_deadline(r.m) is None
    assert r.tick(100.0).transition is None  # no takeover without a link


@pytest.mark.parametrize("supervise", [False, True])
def test_startup_owner_is_master_at_once(supervise):
    r = Run(params(priority=255, supervise=supervise), now=2.0)
    assert r.first.transition == (State.INIT, State.MASTER)
    if supervise:
        # A leftover container is stopped first (issue 10, hole 5); nothing heard yet:
        # Milvus (and with it the VIP) waits a master-down interval, and for that stop.
        assert r.first.actions == (DelVip(), StopContainer(), SendAdvert(255), Notify(State.MASTER, 255))
        assert r.m.container == Container.STOPPING and r.m.gate_deadline is not None
    else:
        assert r.first.actions[:3] == (SendAdvert(255), AddVip(), SendGarp())
    assert r.first.actions[-1] == Notify(State.MASTER, 255)
    assert "RFC 5798 6.4.1" in r.first.reason
    assert r.m.adver_deadline == 3.0
    if not supervise:
        assert len(r.first.actions) == 4


# ---------------------------------------------------------------- backup


def test_backup_takes_over_when_no_advert_arrives():
    r = Run(params())
    assert r.tick(MD_91 - 1e-6).actions == ()
    assert r.state == State.BACKUP
    d = r.tick(MD_91)
    assert d.transition == (State.BACKUP, State.MASTER)
    assert d.actions == (SendAdvert(91), AddVip(), SendGarp(), Notify(State.MASTER, 91))
    assert d.reason == "no master advertised within 3.64s; taking over"
    assert r.m.adver_deadline == MD_91 + 1.0
    assert r.m.master_down_deadline is None


@pytest.mark.parametrize("their_priority", [92, 91, 200, 255])
def test_backup_adverts_from_higher_or_equal_master_reset_the_timer(their_priority):
    r = Run(params())
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        assert r.do(advert(their_priority), t).actions == ()
        assert r.m.master_down_deadline == t + MD_91
        assert r.tick(t + 0.9).transition is None
    assert r.m.master.priority == their_priority and r.m.master.address == PEER
    assert r.tick(5.0 + MD_91).transition == (State.BACKUP, State.MASTER)
    assert "master 10.0.0.9 silent for 3.64s; taking over" == r.m.reason


def test_backup_v3_learns_the_masters_interval():
    p = params(version=3, priority=100, interval=1.0)
    r = Run(p)
    r.do(advert(200, interval=2.0, version=3), 1.0)
    assert r.m.master_adver_interval == 2.0
    expected = 3 * 2.0 + 156 * 2.0 / 256          # RFC 5798 6.1 with the learned interval
    assert master_down(r.m, p) == expected
    assert r.m.master_down_deadline == 1.0 + expected
    assert r.tick(1.0 + expected - 0.01).transition is None
    assert r.tick(1.0 + expected).transition == (State.BACKUP, State.MASTER)


def test_backup_v2_keeps_its_own_interval():
    r = Run(params())
    r.do(advert(200, interval=2.0), 1.0)  # v2 drops a mismatch in the codec; the machine ignores it
    assert r.m.master_adver_interval == 1.0
    assert r.m.master_down_deadline == 1.0 + MD_91


@pytest.mark.parametrize("version, skew", [(2, 165 / 256), (3, 165 / 256)])
def test_backup_priority_zero_means_takeover_after_skew_only(version, skew):
    r = Run(params(version=version))
    r.do(advert(200, version=version), 1.0)
    assert r.do(advert(0, version=version), 1.5).actions == ()
    assert r.m.master_down_deadline == 1.5 + skew
    assert r.tick(1.5 + skew - 1e-6).transition is None
    d = r.tick(1.5 + skew)
    assert d.transition == (State.BACKUP, State.MASTER)
    assert d.reason == "master 10.0.0.9 resigned (priority 0); taking over after the skew time"


def test_backup_preempts_a_lower_master_when_the_timer_expires():
    p = params(priority=150)
    r = Run(p)
    for t in (0.5, 1.5, 2.5):
        r.do(advert(100), t)
        assert r.m.master_down_deadline == MD_150  # discarded (RFC 5798 6.4.2)
    assert r.tick(3.0).transition is None
    r.do(advert(100), 3.2)
    d = r.tick(MD_150)
    assert d.transition == (State.BACKUP, State.MASTER)
    assert d.reason == "master 10.0.0.9 has priority 100, lower than ours 150; preempting"
    assert d.actions[0] == SendAdvert(150)


def test_backup_without_preempt_never_takes_over_from_a_live_lower_master():
    r = Run(params(priority=150, preempt=False))
    for i in range(1, 60):
        r.do(advert(100), float(i))
        assert r.m.master_down_deadline == i + MD_150
        assert r.tick(i + 0.99).transition is None
    assert r.state == State.BACKUP
    assert r.tick(59 + MD_150).transition == (State.BACKUP, State.MASTER)  # only once it is silent
    assert "silent" in r.m.reason


def test_backup_preempt_delay_holds_preemption_until_it_has_passed():
    r = Run(params(priority=150, preempt_delay=10.0), now=100.0)
    t = 100.0
    while t < 125.0:
        t += 0.25
        if t == int(t):
            r.do(advert(100), t)
        d = r.tick(t)
        if d.transition:
            break
    # The last advert that reset the timer came at 109 (still inside the delay).
    assert d.transition == (State.BACKUP, State.MASTER)
    assert r.now == pytest.approx(109 + MD_150, abs=0.25)
    assert "preempting" in d.reason


# ---------------------------------------------------------------- master


def test_master_advertises_every_interval_without_drift():
    r = Run(params(priority=255), now=0.0)
    assert r.m.adver_deadline == 1.0
    assert r.tick(0.99).actions == ()
    assert r.tick(1.3).actions == (SendAdvert(255),)
    assert r.m.adver_deadline == 2.0           # from the deadline, not from the late tick
    assert r.tick(1.9).actions == ()
    assert r.tick(2.0).actions == (SendAdvert(255),)
    assert r.m.adver_deadline == 3.0
    # A stalled loop sends one advert, not a burst, and the next deadline is in the future.
    assert r.tick(7.5).actions == (SendAdvert(255),)
    assert r.m.adver_deadline == 8.5
    assert next_deadline(r.m) == 8.5


def test_master_garp_refresh():
    r = Run(params(priority=255, garp_refresh=5.0), now=0.0)
    assert r.m.garp_deadline == 5.0
    assert SendGarp() in r.tick(5.0).actions
    assert r.m.garp_deadline == 10.0


def test_master_answers_priority_zero_at_once():
    r = took_over(params())
    t = r.now + 0.4
    d = r.do(advert(0), t)
    assert d.actions == (SendAdvert(91),)
    assert d.transition is None
    assert r.m.adver_deadline == t + 1.0


def test_master_steps_down_on_higher_priority():
    r = took_over(params())
    d = r.do(advert(92), r.now + 0.5)
    assert d.transition == (State.MASTER, State.BACKUP)
    # No container to stop: resign (priority 0), drop the VIP, listen again.
    assert d.actions == (SendAdvert(0), DelVip(), Notify(State.BACKUP, 91))
    assert d.reason == "master 10.0.0.9 advertises priority 92, above ours 91; stepping down"
    assert r.m.master_down_deadline == r.now + MD_91
    assert r.m.adver_deadline is None


@pytest.mark.parametrize("ours, theirs, steps_down", [
    ("10.0.0.5", "10.0.0.9", True),
    ("10.0.0.9", "10.0.0.10", True),      # numeric order, not string order
    ("10.0.0.9", "10.0.0.5", False),
    ("10.0.0.10", "10.0.0.9", False),
    ("fe80::1", "fe80::2", True),
])
def test_master_equal_priority_tie_break_on_address(ours, theirs, steps_down):
    r = took_over(params(address=ours))
    d = r.do(advert(91, src=theirs), r.now + 0.5)
    if steps_down:
        assert d.transition == (State.MASTER, State.BACKUP)
    else:
        assert d.transition is None and d.actions == ()
        assert r.state == State.MASTER


def test_master_ignores_a_lower_priority():
    r = took_over(params())
    d = r.do(advert(90), r.now + 0.5)
    assert d.transition is None and d.actions == ()
    assert r.m.master.priority == 90


# ---------------------------------------------------------------- supervision


def test_becoming_master_after_a_silent_master_starts_milvus_at_once():
    p = params(supervise=True)
    r = Run(p)
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.0)
    r.do(advert(200), 0.5)
    d = r.tick(0.5 + master_down(r.m, p))
    assert d.transition == (State.BACKUP, State.MASTER)
    assert d.actions == (SendAdvert(91), AddVip(), SendGarp(), StartContainer(), Notify(State.MASTER, 91))
    assert d.reason.endswith("; starting milvus")
    assert r.m.container == Container.STARTING
    assert check_role(r.m) == "none"  # no verdicts while it starts


def test_first_master_since_start_waits_one_interval_before_milvus():
    p = params(supervise=True)
    r = Run(p)
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.0)
    d = r.tick(master_down(r.m, p))
    assert d.transition == (State.BACKUP, State.MASTER)
    assert StartContainer() not in d.actions
    assert "to be sure no other master is there" in d.reason
    assert StartContainer() not in r.tick(r.now + p.interval / 2).actions
    assert StartContainer() in r.tick(r.now + p.interval / 2).actions


def test_container_ready_ok_means_running():
    r = took_over(params(supervise=True))
    d = r.do(ContainerReady(ok=True, reason="healthz ok"), r.now + 20)
    assert d.actions == () and d.transition is None
    assert d.reason == "milvus is serving: healthz ok"
    assert r.m.container == Container.RUNNING
    assert check_role(r.m) == "master"


def _leaves_to_fault_after_the_stop(r: Run, d: Decision) -> None:
    """The single-writer exit: VIP removed (no write reaches a stopping Milvus) and stop
    requested, adverts go on, then priority 0."""
    assert d.transition is None and r.state == State.MASTER
    assert d.actions == (DelVip(), StopContainer(grace=False))   # a failed Milvus gets no grace
    assert d.reason.endswith("; stopping milvus before handing over")
    assert r.m.leaving == State.FAULT and r.m.container == Container.STOPPING
    assert check_role(r.m) == "none"
    t = r.now
    for k in (1, 2, 3):
        assert SendAdvert(91) in r.tick(t + k).actions, "a leaving master keeps advertising"
    assert 0 not in r.sent()
    done = r.do(ContainerStopped(ok=True, reason="exited"), t + 3.5)
    assert done.transition == (State.MASTER, State.FAULT)
    assert done.actions[0] == SendAdvert(0)
    assert DelVip() in done.actions
    assert r.m.container == Container.STOPPED and r.m.leaving is None
    assert next_deadline(r.m) is None


def test_container_not_ready_gives_up_mastership():
    r = took_over(params(supervise=True))
    d = r.do(ContainerReady(ok=False, reason="timeout after 60s"), r.now + 60)
    _leaves_to_fault_after_the_stop(r, d)
    assert r.m.reason == "milvus did not become healthy: timeout after 60s; giving up mastership"


def test_failing_master_checks_give_up_mastership():
    r = serving(params())
    d = r.do(HealthChanged(healthy=False, reason="grpc timeout", role="master"), r.now + 1)
    _leaves_to_fault_after_the_stop(r, d)
    assert r.m.reason == "milvus checks failed: grpc timeout; giving up mastership"


@pytest.mark.parametrize("role", ["backup", "none"])
def test_health_verdict_for_another_role_is_stale(role):
    r = serving(params())
    before = r.m
    d = r.do(HealthChanged(healthy=False, reason="old", role=role), r.now + 1)
    assert d == Decision(before)


def test_master_checks_while_milvus_starts_are_stale():
    r = took_over(params(supervise=True))
    d = r.do(HealthChanged(healthy=False, reason="not up yet", role="master"), r.now + 1)
    assert d.actions == () and r.m.leaving is None and r.state == State.MASTER


def test_unhealthy_backup_goes_to_fault_and_back():
    r = Run(params())
    d = r.do(HealthChanged(healthy=False, reason="disk full", role="backup"), 1.0)
    assert d.transition == (State.BACKUP, State.FAULT)
    assert d.reason == "cannot serve if promoted: disk full"
    assert r.m.master_down_deadline is None
    assert r.tick(100.0).transition is None
    r.do(LinkChanged(up=True), 101.0)
    assert r.state == State.FAULT, "link up does not override failing checks"
    d = r.do(HealthChanged(healthy=True, reason="disk ok", role="backup"), 102.0)
    assert d.transition == (State.FAULT, State.BACKUP)
    assert d.reason == "checks pass again: disk ok"
    assert r.m.master_down_deadline == 102.0 + MD_91


def test_stop_failure_retries_and_never_resigns_before_a_confirmed_stop():
    r = serving(params())
    r.do(HealthChanged(healthy=False, reason="grpc timeout", role="master"), r.now + 1)
    t0, first = r.now, len(r.decisions) - 1
    d = r.do(ContainerStopped(ok=False, reason="docker: timeout"), t0 + 0.2)
    assert d.transition is None and r.state == State.MASTER and r.m.leaving == State.FAULT
    assert d.reason == "milvus could not be stopped: docker: timeout; retrying, and not handing over"
    assert StopContainer(grace=False) not in r.tick(t0 + 0.2 + STOP_RETRY - 0.01).actions
    assert StopContainer(grace=False) in r.tick(t0 + 0.2 + STOP_RETRY).actions
    r.do(ContainerStopped(ok=False, reason="docker: timeout"), t0 + 2.0)
    for k in range(1, 10):
        r.tick(t0 + 2.0 + k)
    stops = sum(StopContainer(grace=False) in d.actions for d in r.decisions[first:])
    assert stops == 3  # the leave, and one retry per failure
    assert r.state == State.MASTER and 0 not in r.sent()
    assert r.sent()[-1] == 91, "it still advertises while the stop is retried"
    assert r.do(ContainerStopped(ok=True, reason="exited"), t0 + 12).transition == (State.MASTER, State.FAULT)
    assert r.sent()[-1] == 0


# ---------------------------------------------------------------- the start gate


def _preempting_backup() -> Run:
    """Priority 150 preempts a live priority-100 master that advertises every second."""
    r = Run(params(priority=150, supervise=True))
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.1)
    for t in (0.5, 1.5, 2.5):
        r.do(advert(100), t)
    d = r.tick(MD_150)
    assert d.transition == (State.BACKUP, State.MASTER)
    assert StartContainer() not in d.actions
    assert r.m.container == Container.WAITING
    assert d.reason.endswith("; milvus waits until 10.0.0.9 has stopped its own")
    assert r.m.gate_deadline == 2.5 + MD_150
    return r


def test_gate_waits_for_the_old_masters_priority_zero():
    r = _preempting_backup()
    r.do(advert(100), 3.5)              # the old master stops its Milvus, still advertising
    assert r.m.gate_deadline == 3.5 + MD_150
    for t in (4.0, 4.5, 5.0, 6.0):
        assert StartContainer() not in r.tick(t).actions
    r.do(advert(100), 6.5)
    d = r.do(advert(0), 7.0)
    assert d.actions == (SendAdvert(150), AddVip(), SendGarp(), StartContainer())
    assert d.reason == "10.0.0.9 has stopped its milvus; starting milvus"
    assert r.m.container == Container.STARTING and r.m.gate_deadline is None
    assert r.state == State.MASTER


def test_gate_opens_when_the_old_master_is_silent_for_master_down():
    r = _preempting_backup()
    r.do(advert(100), 3.5)
    assert StartContainer() not in r.tick(3.5 + MD_150 - 0.01).actions
    d = r.tick(3.5 + MD_150)
    assert StartContainer() in d.actions
    assert d.reason == f"previous master {PEER} went silent; starting milvus"
    assert r.m.container == Container.STARTING


def test_gate_priority_zero_from_someone_else_does_not_open_it():
    r = _preempting_backup()
    d = r.do(advert(0, src="10.0.0.77"), 3.6)
    assert StartContainer() not in d.actions
    assert r.m.container == Container.WAITING


def test_waiting_master_that_steps_down_resigns_at_once():
    r = _preempting_backup()
    d = r.do(advert(200, src="10.0.0.42"), 3.6)
    assert d.transition == (State.MASTER, State.BACKUP)
    assert d.actions[:2] == (SendAdvert(0), DelVip())
    assert StopContainer() not in d.actions and StartContainer() not in d.actions


# ---------------------------------------------------------------- link


def test_link_down_on_master_is_fault_then_backup_when_up():
    r = serving(params())
    t = r.now
    d = r.do(LinkChanged(up=False, detail="carrier lost"), t + 1)
    assert d.transition == (State.MASTER, State.FAULT)
    assert d.actions == (DelVip(), StopContainer(grace=False), Notify(State.FAULT, 91))
    assert d.reason == "interface eth0 went down: carrier lost"
    assert SendAdvert(0) not in d.actions  # cannot reach anyone
    assert next_deadline(r.m) is None
    r.do(ContainerStopped(ok=True, reason="exited"), t + 2)
    d = r.do(LinkChanged(up=True), t + 3)
    assert d.transition == (State.FAULT, State.BACKUP)
    assert d.actions == (DelVip(), Notify(State.BACKUP, 91))
    assert r.m.master_down_deadline == t + 3 + MD_91


def test_link_down_on_backup_is_fault():
    r = Run(params())
    d = r.do(LinkChanged(up=False), 1.0)
    assert d.transition == (State.BACKUP, State.FAULT)
    assert r.tick(100.0).transition is None


# ---------------------------------------------------------------- shutdown


def test_shutdown_master_stops_milvus_then_resigns():
    r = serving(params())
    t = r.now
    d = r.do(Shutdown(), t + 1)
    assert d.transition is None and d.actions == (DelVip(), StopContainer())
    assert r.m.leaving == State.STOPPED
    assert SendAdvert(91) in r.tick(t + 2.5).actions
    d = r.do(ContainerStopped(ok=True, reason="exited"), t + 3)
    assert d.transition == (State.MASTER, State.STOPPED)
    assert d.actions[0] == SendAdvert(0)
    assert d.actions[-1] == Notify(State.STOPPED, 91)
    assert d.reason == "shutting down"
    assert next_deadline(r.m) is None
    assert r.do(advert(200), t + 4).actions == ()


def test_shutdown_master_without_container_resigns_at_once():
    r = took_over(params())
    d = r.do(Shutdown(), r.now + 1)
    assert d.transition == (State.MASTER, State.STOPPED)
    assert d.actions == (SendAdvert(0), DelVip(), Notify(State.STOPPED, 91))


def test_shutdown_backup_stops_at_once():
    r = Run(params())
    d = r.do(Shutdown(), 1.0)
    assert d.transition == (State.BACKUP, State.STOPPED)
    assert d.actions == (DelVip(), Notify(State.STOPPED, 91))
    assert next_deadline(r.m) is None
    assert r.tick(100.0).transition is None


def test_shutdown_while_leaving_ends_stopped():
    r = serving(params())
    r.do(HealthChanged(healthy=False, reason="grpc timeout", role="master"), r.now + 1)
    d = r.do(Shutdown(), r.now + 1)
    assert d.actions == () and r.m.leaving == State.STOPPED
    assert r.do(ContainerStopped(ok=True, reason="exited"), r.now + 1).transition == (State.MASTER, State.STOPPED)


# ---------------------------------------------------------------- planned failover


@pytest.mark.parametrize("supervise", [False, True])
def test_failover_on_master_hands_over_and_holds(supervise):
    r = serving(params()) if supervise else took_over(params())
    t = r.now
    d = r.do(FailoverRequested(), t + 1)
    if supervise:
        assert d.actions == (DelVip(), StopContainer()) and r.m.leaving == State.BACKUP
        assert 0 not in r.sent()
        d = r.do(ContainerStopped(ok=True, reason="exited"), t + 2)
    assert d.transition == (State.MASTER, State.BACKUP)
    assert d.actions[:2] == (SendAdvert(0), DelVip())
    assert d.reason == "planned switchover requested by the operator"
    assert r.m.hold
    # The new master has a lower priority: without the hold we would preempt it back.
    for k in range(1, 30):
        r.do(advert(50), r.now + 1)
        assert r.tick(r.now + 0.5).transition is None
    assert r.state == State.BACKUP


def test_failover_on_backup_takes_over_at_once_with_boosted_priority():
    r = Run(params())
    r.do(advert(200), 1.0)
    d = r.do(FailoverRequested(), 1.5)
    assert d.transition == (State.BACKUP, State.MASTER)
    assert d.actions == (SendAdvert(TAKEOVER_PRIORITY), AddVip(), SendGarp(), Notify(State.MASTER, 254))
    assert "advertising priority 254" in d.reason
    assert r.tick(2.5).actions == (SendAdvert(254),)
    assert r.do(advert(200), 2.6).transition is None, "200 is below our 254 now"


def test_failover_on_backup_gates_milvus_on_the_old_master():
    r = Run(params(supervise=True))
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.1)
    r.do(advert(200), 1.0)
    d = r.do(FailoverRequested(), 1.5)
    assert d.transition == (State.BACKUP, State.MASTER)
    assert StartContainer() not in d.actions and r.m.container == Container.WAITING
    r.do(advert(200), 2.0)            # the old master stops its Milvus, still advertising
    assert r.m.container == Container.WAITING
    d = r.do(advert(0), 2.5)
    assert StartContainer() in d.actions


def test_failover_refused_in_fault():
    r = Run(params())
    r.do(LinkChanged(up=False), 1.0)
    d = r.do(FailoverRequested(force=True), 2.0)
    assert d.transition is None and d.actions == ()
    assert d.reason == "refused failover: nothing to do in state fault"


def test_failover_refused_on_unhealthy_backup_unless_forced():
    r = Run(params())
    r.do(PauseChanged(paused=True), 0.5)  # paused: a failing check keeps it in BACKUP
    r.do(HealthChanged(healthy=False, reason="disk full", role="backup"), 1.0)
    assert r.state == State.BACKUP and r.m.healthy is False
    d = r.do(FailoverRequested(), 2.0)
    assert d.transition is None and d.reason == "refused takeover: this host cannot serve"
    d = r.do(FailoverRequested(force=True), 3.0)
    assert d.transition == (State.BACKUP, State.MASTER)


def test_failover_refused_on_a_leaving_master():
    r = serving(params())
    r.do(Shutdown(), r.now + 1)
    d = r.do(FailoverRequested(), r.now + 1)
    assert d.transition is None and d.actions == ()
    assert "refused failover" in d.reason


# ---------------------------------------------------------------- pause


def test_paused_backup_does_not_take_over_and_resume_rearms():
    r = Run(params())
    d = r.do(PauseChanged(paused=True), 1.0)
    assert d.reason == "paused: no automatic transitions and no container actions"
    d = r.tick(MD_91)
    assert d.transition is None
    assert d.reason == "paused: the master looks down, but automatic takeover is off"
    assert r.m.master_down_deadline == 2 * MD_91
    assert r.tick(2 * MD_91).transition is None
    d = r.do(PauseChanged(paused=False), 10.0)
    assert d.reason == "resumed: automatic transitions are on again"
    assert r.m.master_down_deadline == 10.0 + MD_91
    assert r.tick(10.0 + MD_91 - 0.01).transition is None
    assert r.tick(10.0 + MD_91).transition == (State.BACKUP, State.MASTER)


def test_pause_twice_is_a_no_op():
    r = Run(params())
    r.do(PauseChanged(paused=True), 1.0)
    assert r.do(PauseChanged(paused=True), 2.0).reason is None


def test_paused_master_ignores_failing_checks():
    r = serving(params())
    r.do(PauseChanged(paused=True), r.now + 1)
    d = r.do(HealthChanged(healthy=False, reason="grpc timeout", role="master"), r.now + 1)
    assert d.transition is None and d.actions == ()
    assert d.reason == "paused: checks fail (grpc timeout), no action"
    assert r.state == State.MASTER and r.m.leaving is None and r.m.container == Container.RUNNING
    assert SendAdvert(91) in r.tick(r.now + 1).actions


# ---------------------------------------------------------------- small pure helpers


def test_check_role():
    assert check_role(Machine(state=State.BACKUP)) == "backup"
    assert check_role(Machine(state=State.FAULT)) == "backup"
    assert check_role(Machine(state=State.MASTER, phase=Running())) == "master"
    assert check_role(Machine(state=State.MASTER, phase=Starting(op=1))) == "none"
    assert check_role(Machine(state=State.MASTER, phase=Running(), leaving=State.FAULT)) == "none"


def test_next_deadline_is_the_earliest():
    assert next_deadline(Machine()) is None
    assert next_deadline(Machine(adver_deadline=5.0, garp_deadline=3.0, phase=Waiting(gate_at=4.0))) == 3.0
    assert next_deadline(Machine(adver_deadline=5.0, phase=Stopping(op=1, retry_at=2.0))) == 2.0


# ---------------------------------------------------------------- two hosts on one link


# The two-host simulator models the real executor (one ordered worker per host, the lease
# released only by the machine's ReleaseLease): tests/unit/sim.py.
from tests.unit.sim import Sim as Pair  # noqa: E402


def _serving_pair(pa: int, pb: int, b_starts: float = 20.0, **kw) -> Pair:
    """Host a (priority pa) is master with Milvus up; host b (pb) starts at b_starts."""
    a = params(priority=pa, address="10.0.0.1", supervise=True, **kw)
    b = params(priority=pb, address="10.0.0.2", supervise=True, **kw)
    net = Pair(a, b)
    net.at(0.0, 0, Startup())
    net.at(b_starts, 1, Startup())
    net.run_until(b_starts - 0.01)
    assert net.a.m.state == State.MASTER and net.a.m.container == Container.RUNNING
    return net


def test_pair_preemption_hands_milvus_over_without_overlap():
    net = _serving_pair(100, 200)
    net.run_until(60.0)
    assert (net.a.m.state, net.b.m.state) == (State.BACKUP, State.MASTER)
    assert net.b.m.container == Container.RUNNING and not net.a.running
    assert net.overlaps == []


def test_pair_failing_master_hands_over_without_overlap():
    net = _serving_pair(200, 100)
    net.run_until(40.0)
    assert net.b.m.state == State.BACKUP
    net.at(40.0, 0, HealthChanged(healthy=False, reason="grpc timeout", role="master"))
    net.run_until(80.0)
    assert (net.a.m.state, net.b.m.state) == (State.FAULT, State.MASTER)
    assert net.b.m.container == Container.RUNNING
    assert net.overlaps == []


def test_pair_planned_takeover_hands_over_without_overlap():
    net = _serving_pair(200, 100)
    net.run_until(40.0)
    net.at(40.0, 1, FailoverRequested())
    net.run_until(80.0)
    assert (net.a.m.state, net.b.m.state) == (State.BACKUP, State.MASTER)
    assert net.b.m.container == Container.RUNNING
    assert net.overlaps == []


def test_pair_shutdown_hands_over_without_overlap():
    net = _serving_pair(200, 100)
    net.run_until(40.0)
    net.at(40.0, 0, Shutdown())
    net.run_until(80.0)
    assert (net.a.m.state, net.b.m.state) == (State.STOPPED, State.MASTER)
    assert net.overlaps == []


# ---------------------------------------------------------------- regressions (bugs found and fixed)


def test_regression_backup_retries_a_failed_stop():
    r = Run(params(supervise=True))                       # start-up stops a stale container
    r.do(ContainerStopped(ok=False, reason="docker: timeout"), 0.5)
    d = r.tick(0.5 + STOP_RETRY)
    nd = next_deadline(r.m)
    assert nd is None or nd > r.now, f"next_deadline {nd} is not after the tick at {r.now}: busy loop"
    assert StopContainer() in d.actions, "the stale Milvus on a backup is never stopped"


def test_regression_stale_stop_retry_deadline_after_the_leave():
    r = serving(params())
    r.do(HealthChanged(healthy=False, reason="grpc timeout", role="master"), r.now + 1)
    t = r.now
    r.do(ContainerStopped(ok=False, reason="docker: timeout"), t + 0.1)
    r.do(ContainerStopped(ok=True, reason="exited after all"), t + 0.5)   # before the retry fires
    assert r.state == State.FAULT
    r.do(HealthChanged(healthy=True, reason="ok", role="backup"), t + 0.6)
    assert r.state == State.BACKUP
    r.tick(t + 2.0)
    nd = next_deadline(r.m)
    assert nd is None or nd > r.now, f"next_deadline {nd} is not after the tick at {r.now}: busy loop"


def test_regression_shutdown_survives_a_link_loss():
    r = serving(params())
    r.do(Shutdown(), r.now + 1)
    r.do(LinkChanged(up=False), r.now + 0.5)
    r.do(ContainerStopped(ok=True, reason="exited"), r.now + 1)
    assert r.state == State.STOPPED
    r.do(LinkChanged(up=True), r.now + 1)
    r.tick(r.now + 10)
    assert r.state == State.STOPPED


def test_regression_resume_acts_on_a_check_that_failed_while_paused():
    r = Run(params(supervise=True))
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.1)
    r.do(PauseChanged(paused=True), 0.5)
    r.do(HealthChanged(healthy=False, reason="disk full", role="backup"), 1.0)
    r.do(PauseChanged(paused=False), 2.0)
    r.tick(2.0 + MD_91)
    assert r.state == State.FAULT
    assert all(StartContainer() not in d.actions for d in r.decisions)


def test_regression_resume_gives_up_a_master_that_failed_while_paused():
    r = serving(params())
    r.do(PauseChanged(paused=True), r.now + 1)
    r.do(HealthChanged(healthy=False, reason="grpc timeout", role="master"), r.now + 1)
    d = r.do(PauseChanged(paused=False), r.now + 1)
    assert r.m.leaving == State.FAULT and StopContainer(grace=False) in d.actions


def test_regression_v3_gate_uses_the_old_masters_interval():
    p = params(version=3, priority=150, interval=1.0, supervise=True)
    r = Run(p)
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.1)
    r.do(advert(100, interval=5.0, version=3), 0.5)     # old master advertises every 5 s
    d = r.tick(r.m.master_down_deadline)
    assert d.transition == (State.BACKUP, State.MASTER)
    assert r.m.container == Container.WAITING
    # The old master has missed no advert yet (its next one is due at 5.5): the gate stays shut.
    for t in (4.0, 5.0, 5.4):
        assert StartContainer() not in r.tick(t).actions
    # RFC 5798 6.1 with the old master's interval: 3 * 5 + skew.
    silent = 0.5 + 3 * 5.0 + (256 - 150) * 5.0 / 256
    assert StartContainer() not in r.tick(silent - 0.01).actions
    assert StartContainer() in r.tick(silent).actions


def test_regression_owner_startup_gates_milvus():
    r = Run(params(priority=255, supervise=True))
    assert r.state == State.MASTER
    assert StartContainer() not in r.first.actions
    assert r.m.container == Container.STOPPING and r.m.gate_deadline is not None
    r.do(ContainerStopped(ok=True, reason="no leftover"), r.now + 0.1)
    assert r.m.container == Container.WAITING


def test_regression_pair_owner_restart_overlaps():
    net = _serving_pair(100, 255)
    net.run_until(60.0)
    assert net.b.m.state == State.MASTER and net.b.m.container == Container.RUNNING
    assert net.overlaps == []


def test_regression_pair_simultaneous_election_overlaps():
    a = params(priority=100, address="10.0.0.1", supervise=True)
    b = params(priority=100, address="10.0.0.2", supervise=True)
    net = Pair(a, b)
    net.at(0.0, 0, Startup())
    net.at(0.0, 1, Startup())
    net.run_until(60.0)
    assert (net.a.m.state, net.b.m.state) == (State.BACKUP, State.MASTER)  # b has the higher address
    assert net.b.m.container == Container.RUNNING
    assert net.overlaps == []


def test_regression_pair_v3_slow_old_master_overlaps():
    a = params(version=3, priority=100, interval=5.0, address="10.0.0.1", supervise=True)
    b = params(version=3, priority=200, interval=1.0, address="10.0.0.2", supervise=True)
    net = Pair(a, b)
    net.a.stop_delay = 6.0      # a slow, but successful, stop
    net.at(0.0, 0, Startup())
    net.at(40.0, 1, Startup())
    net.run_until(39.0)
    assert net.a.m.container == Container.RUNNING
    net.run_until(120.0)
    assert (net.a.m.state, net.b.m.state) == (State.BACKUP, State.MASTER)
    assert net.overlaps == []


def test_regression_pair_failover_right_after_startup_overlaps():
    net = _serving_pair(200, 100, b_starts=20.0)
    net.at(20.001, 1, FailoverRequested())      # before the first advert from a arrives
    net.run_until(80.0)
    assert (net.a.m.state, net.b.m.state) == (State.BACKUP, State.MASTER)
    assert net.b.m.container == Container.RUNNING
    assert net.overlaps == []


def test_regression_shutdown_of_a_waiting_master_clears_the_gate():
    r = _preempting_backup()
    d = r.do(Shutdown(), 3.6)
    assert d.transition == (State.MASTER, State.STOPPED)
    assert StartContainer() not in r.tick(10.0).actions
    assert next_deadline(r.m) is None, "a stopped machine still asks to be woken"


# ---------------------------------------------------------------- the storage lease


def test_lease_gate_takes_the_lease_before_the_vip_and_the_container():
    p = params(supervise=True, lease=True)
    r = Run(p)
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.0)
    r.tick(master_down(r.m, p))
    d = r.tick(r.now + p.interval)              # the settle window after start-up
    assert AcquireLease() in d.actions
    assert AddVip() not in d.actions and StartContainer() not in d.actions
    assert r.m.container == Container.LEASING and check_role(r.m) == "none"
    d = r.do(LeaseResult(ok=True, reason="storage lease /s/.havip-lease acquired (epoch 3)"), r.now + 0.01)
    assert d.actions == (AddVip(), SendGarp(), StartContainer())
    assert r.m.container == Container.STARTING
    assert d.reason == "storage lease /s/.havip-lease acquired (epoch 3); starting milvus"


def _leasing(p: Params) -> Run:
    r = Run(p)
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.0)
    r.tick(master_down(r.m, p))
    r.tick(r.now + p.interval)
    assert r.m.container == Container.LEASING
    return r


def test_lease_held_elsewhere_keeps_vip_and_milvus_off_and_retries():
    p = params(supervise=True, lease=True)
    r = _leasing(p)
    d = r.do(LeaseResult(ok=False, reason="the storage lease is held by h1", holder="h1"), r.now + 0.01)
    assert d.actions == () and d.reason.startswith("milvus waits: the storage lease is held by h1")
    assert next_deadline(r.m) == pytest.approx(r.now + LEASE_RETRY)
    d = r.tick(r.now + LEASE_RETRY)
    assert AcquireLease() in d.actions and AddVip() not in d.actions and StartContainer() not in d.actions
    # The same holder again: retried quietly, not one log line every LEASE_RETRY.
    d = r.do(LeaseResult(ok=False, reason="the storage lease is held by h1", holder="h1"), r.now + 0.01)
    assert d.reason is None
    assert r.state == State.MASTER and r.m.container == Container.LEASING


def test_lease_waiting_master_steps_down_at_once_for_a_higher_master():
    p = params(supervise=True, lease=True)
    r = _leasing(p)
    r.do(LeaseResult(ok=False, reason="held by h1", holder="h1"), r.now + 0.01)
    d = r.do(advert(200), r.now + 0.1)            # the partition heals
    assert r.state == State.BACKUP
    assert SendAdvert(0) in d.actions and StopContainer() not in d.actions and AddVip() not in d.actions
    assert r.m.lease_retry_deadline is None


def test_without_preemption_a_master_advertises_priority_1_until_the_lease_is_its():
    # A master in name only (preempt off) yields to any master that serves: it advertises
    # YIELD_PRIORITY and steps down on a lower priority's advert; the lease makes it whole.
    p = params(supervise=True, lease=True, preempt=False)               # priority 91
    r = Run(p)
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.0)
    d = r.tick(master_down(r.m, p))
    assert d.transition == (State.BACKUP, State.MASTER) and SendAdvert(YIELD_PRIORITY) in d.actions
    assert advertised_priority(r.m, p) == YIELD_PRIORITY and effective_priority(r.m, p) == 91
    r.tick(r.now + p.interval)
    r.do(LeaseResult(ok=False, reason="the storage lease is held by h1", holder="h1"), r.now + 0.01)
    assert r.sent()[-1] == YIELD_PRIORITY
    d = r.do(advert(50), r.now + 0.1)                                   # h1 serves at 50: we yield
    assert d.transition == (State.MASTER, State.BACKUP)
    assert d.reason == f"master {PEER} advertises priority 50, above ours 1; stepping down"
    # Granted, it advertises its own priority again; so do a planned takeover and preemption.
    r = _leasing(p)
    r.do(LeaseResult(ok=True, reason="acquired"), r.now + 0.01)
    assert advertised_priority(r.m, p) == 91 and r.do(advert(50), r.now + 0.1).transition is None
    assert r.tick(r.now + p.interval).actions[0] == SendAdvert(91)
    boosted = replace(_leasing(p).m, boost=True)
    assert advertised_priority(boosted, p) == TAKEOVER_PRIORITY
    assert advertised_priority(_leasing(replace(p, preempt=True)).m, replace(p, preempt=True)) == 91


def test_lease_granted_after_leaving_is_given_back():
    p = params(supervise=True, lease=True)
    r = _leasing(p)
    r.do(advert(200), r.now + 0.1)               # the acquire is still in flight
    d = r.do(LeaseResult(ok=True, reason="acquired"), r.now + 0.01)
    assert d.actions == (ReleaseLease(),)
    assert r.state == State.BACKUP and r.m.container == Container.STOPPED


def test_lease_retry_and_gate_while_paused_do_not_spin():
    p = params(supervise=True, lease=True)
    r = _leasing(p)
    r.do(LeaseResult(ok=False, reason="held by h1", holder="h1"), r.now + 0.01)
    r.do(PauseChanged(paused=True), r.now + 0.01)
    d = r.tick(r.now + 1)
    assert AcquireLease() not in d.actions, "no container actions while paused"
    nd = next_deadline(r.m)
    assert nd is not None and nd > r.now, f"next_deadline {nd} is not after the tick at {r.now}: busy loop"
    r.do(PauseChanged(paused=False), r.now + 0.1)
    d = r.tick(r.m.lease_retry_deadline)
    assert AcquireLease() in d.actions


def test_regression_paused_gate_left_its_deadline_in_the_past():
    # Found while adding the lease: a master whose gate was due while paused kept the
    # deadline in the past, and the loop, asked to wake at once, spun at 100% CPU.
    p = params(supervise=True)
    r = Run(p)
    r.do(ContainerStopped(ok=True, reason="no stale container"), 0.0)
    r.tick(master_down(r.m, p))
    assert r.m.container == Container.WAITING
    r.do(PauseChanged(paused=True), r.now + 0.1)
    r.tick(r.now + 2 * p.interval)
    nd = next_deadline(r.m)
    assert nd is not None and nd > r.now, f"next_deadline {nd} is not after the tick at {r.now}: busy loop"
    assert r.m.container == Container.WAITING


def _split_brain(lease: bool) -> Pair:
    net = _serving_pair(200, 100, lease=lease)
    net.run_until(40.0)
    assert net.b.m.state == State.BACKUP
    net.partitioned = True               # both up, both on the storage, deaf to each other
    net.run_until(80.0)
    return net


def test_pair_split_brain_without_a_lease_runs_two_milvus():
    # What VRRP alone does, and why the lease exists: both hosts elect themselves.
    net = _split_brain(lease=False)
    assert (net.a.m.state, net.b.m.state) == (State.MASTER, State.MASTER)
    assert net.overlaps != []


def test_pair_split_brain_with_a_lease_runs_one_milvus_and_heals():
    net = _split_brain(lease=True)
    assert (net.a.m.state, net.b.m.state) == (State.MASTER, State.MASTER)
    assert net.a.m.container == Container.RUNNING and net.b.m.container == Container.LEASING
    assert net.overlaps == [] and net.lease_holder == 0
    net.partitioned = False
    net.run_until(120.0)
    assert (net.a.m.state, net.b.m.state) == (State.MASTER, State.BACKUP)
    assert net.a.m.container == Container.RUNNING and net.overlaps == []


def _lower_serving_split(preempt: bool, apart: float) -> Pair:
    """a (200) and b (100), the lease; b serves after a planned handover; then they do not
    hear each other for `apart` seconds (longer than a's master-down interval of 3.2 s)."""
    net = _serving_pair(200, 100, lease=True, preempt=preempt)
    net.run_until(40.0)
    net.at(40.0, 0, FailoverRequested(force=False))   # a holds back after it (even with preemption)
    net.run_until(80.0)
    assert (net.b.m.state, net.b.m.container, net.lease_holder) == (State.MASTER, Container.RUNNING, 1)
    assert net.a.m.state == State.BACKUP
    net.partitioned = True
    net.run_until(net.now + apart)
    assert (net.a.m.state, net.a.m.container) == (State.MASTER, Container.LEASING), net.a.m
    return net


@pytest.mark.parametrize("apart", [3.5, 20.0])      # three adverts lost; a long split brain
def test_pair_heal_without_preemption_keeps_the_lower_priority_that_serves(apart):
    # issue 11 item 2 (the real-server matrix's "split brain, h2 serving"): with preempt
    # off, a master in name only (a, priority 200, no lease: b holds it and serves) used to
    # win the heal on priority, and b stopped its Milvus for a: an automatic failback, the
    # outage preempt: false is there to avoid, from a split brain or three lost adverts.
    # Now a advertises priority 1 until it holds the lease, so it yields to b.
    net = _lower_serving_split(preempt=False, apart=apart)
    healed = net.now
    net.partitioned = False
    while net.now < healed + 40.0:
        net.run_until(net.now + 0.25)
        assert (net.b.m.state, net.b.m.container) == (State.MASTER, Container.RUNNING), net.b.m
    assert (net.a.m.state, net.a.m.container) == (State.BACKUP, Container.STOPPED)
    assert net.lease_holder == 1 and net.overlaps == [] and net.violations == []


def test_pair_heal_with_preemption_hands_back_to_the_higher_priority():
    # With preempt on, the heal is a failback (VRRP: the higher priority wins), as it was.
    net = _lower_serving_split(preempt=True, apart=20.0)
    net.partitioned = False
    net.run_until(net.now + 60.0)
    assert (net.a.m.state, net.a.m.container, net.lease_holder) == (State.MASTER, Container.RUNNING, 0)
    assert net.b.m.state == State.BACKUP and net.overlaps == [] and net.violations == []


def test_pair_split_brain_then_master_fails_the_other_takes_over():
    net = _split_brain(lease=True)
    net.at(80.0, 0, HealthChanged(healthy=False, reason="grpc timeout", role="master"))
    net.run_until(120.0)
    # a stopped its Milvus and gave the lease back; b, still deaf to a, got it.
    assert net.a.m.state == State.FAULT and net.b.m.container == Container.RUNNING
    assert net.lease_holder == 1 and net.overlaps == []


# ---------------------------------------------------------------- no failback to a host whose Milvus failed


def test_a_master_whose_milvus_failed_does_not_preempt_back():
    p = params()                               # priority 91; the peer has 50
    r = serving(p)
    d = r.do(HealthChanged(healthy=False, reason="grpc timeout", role="master"), r.now + 1)
    _leaves_to_fault_after_the_stop(r, d)
    assert r.m.hold
    d = r.do(HealthChanged(healthy=True, reason="standby check passed", role="backup"), r.now + 0.5)
    assert r.state == State.BACKUP
    assert d.reason == ("checks pass again: standby check passed; not preempting back: milvus failed here "
                        "(`havipctl failover` takes over)")
    for i in range(20):                      # the peer (priority 50) serves; we stay backup
        r.do(advert(50), r.now + 1)
        r.tick(r.now + 0.01)
    assert r.state == State.BACKUP
    d = r.do(FailoverRequested(), r.now + 1)   # the operator takes it back
    assert r.state == State.MASTER and not r.m.hold


def test_a_held_backup_still_takes_over_when_the_peer_fails():
    p = params(priority=200)
    r = serving(p)
    r.do(HealthChanged(healthy=False, reason="container gone", role="master"), r.now + 1)
    r.do(ContainerStopped(ok=True, reason="was not running"), r.now + 0.1)
    r.do(HealthChanged(healthy=True, reason="ok", role="backup"), r.now + 0.5)
    r.do(advert(91), r.now + 1)
    r.do(advert(0), r.now + 1)               # the peer's Milvus failed too: it resigns
    r.tick(next_deadline(r.m))
    assert r.state == State.MASTER and not r.m.hold


def test_a_milvus_that_never_became_ready_holds_too():
    r = took_over(params(supervise=True))
    r.do(ContainerReady(ok=False, reason="no answer in 120s"), r.now + 5)
    r.do(ContainerStopped(ok=True, reason="stopped"), r.now + 0.1)
    assert r.state == State.FAULT and r.m.hold


def test_after_a_link_loss_the_master_preempts_back_as_keepalived_does():
    r = serving(params(priority=200))
    r.do(LinkChanged(up=False), r.now + 1)
    r.do(ContainerStopped(ok=True, reason="killed"), r.now + 0.1)
    r.do(LinkChanged(up=True), r.now + 2)
    assert r.state == State.BACKUP and not r.m.hold


def test_pair_crash_looping_milvus_does_not_bounce_between_the_hosts():
    net = _serving_pair(200, 100)
    net.run_until(40.0)
    net.at(40.0, 0, HealthChanged(healthy=False, reason="container exited", role="master"))
    net.at(45.0, 0, HealthChanged(healthy=True, reason="standby ok", role="backup"))
    seen = len(net.a.decisions)
    net.run_until(200.0)
    assert (net.a.m.state, net.b.m.state) == (State.BACKUP, State.MASTER)
    assert net.b.m.container == Container.RUNNING and net.overlaps == []
    assert [d.transition for d in net.a.decisions[seen:] if d.transition] == [
        (State.MASTER, State.FAULT), (State.FAULT, State.BACKUP)]
