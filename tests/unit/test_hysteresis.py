"""Rise/fall hysteresis (table tests) and the CheckRunner cycle with fake checks."""

from __future__ import annotations

import functools
import threading

import pytest

from havip.checks.probes import CheckResult
from havip.checks.runner import CheckRunner, Hysteresis

T, F = True, False


@pytest.mark.parametrize(
    "rise, fall, feed, expected",
    [
        # first decision from the unknown state
        (1, 1, [T], [T]),
        (1, 1, [F], [F]),
        (2, 2, [T, T], [None, T]),
        (2, 2, [F, F], [None, F]),
        (3, 2, [T, T, F, T, T, T], [None, None, None, None, None, T]),
        (2, 3, [F, F, T, F, F, F], [None, None, None, None, None, F]),
        # once decided, the same result again is not a change
        (2, 2, [T, T, T, T], [None, T, None, None]),
        (1, 1, [F, F, F], [F, None, None]),
        # healthy -> unhealthy needs `fall` failures in a row; a pass resets the count
        (1, 2, [T, F, T, F, F], [T, None, None, None, F]),
        (1, 3, [T, F, F, T, F, F, F], [T, None, None, None, None, None, F]),
        # unhealthy -> healthy needs `rise` passes in a row
        (3, 1, [F, T, T, F, T, T, T], [F, None, None, None, None, None, T]),
        # flapping with rise=fall=1 reports every change
        (1, 1, [T, F, T, F], [T, F, T, F]),
        # flapping with rise=fall=2 never decides
        (2, 2, [T, F, T, F, T, F], [None] * 6),
    ],
)
def test_hysteresis_table(rise, fall, feed, expected):
    h = Hysteresis(rise, fall)
    assert [h.feed(ok) for ok in feed] == expected


def test_hysteresis_counts_and_state():
    h = Hysteresis(2, 3)
    assert h.state is None
    h.feed(True)
    assert (h.state, h.passes, h.fails) == (None, 1, 0)
    h.feed(True)
    h.feed(False)
    assert (h.state, h.passes, h.fails) == (True, 0, 1)


@pytest.mark.parametrize("rise, fall", [(0, 1), (1, 0), (-1, 2)])
def test_hysteresis_rejects_zero(rise, fall):
    with pytest.raises(ValueError, match="at least 1"):
        Hysteresis(rise, fall)


# ---------------------------------------------------------------- CheckRunner


class FakeProbe:
    """A check whose outcome the test sets; records how often it ran."""

    def __init__(self, name: str, timeout: float = 1.0):
        self.name = name
        self.timeout = timeout
        self.ok = True
        self.reason = "fine"
        self.calls = 0
        self.block = threading.Event()
        self.blocking = False

    def check(self) -> CheckResult:
        self.calls += 1
        if self.blocking:
            self.block.wait(5)
        return CheckResult(self.name, self.ok, self.reason, 0.0, 0.0)


class Recorder:
    def __init__(self):
        self.changes: list[tuple[bool, str]] = []

    def __call__(self, healthy: bool, reason: str) -> None:
        self.changes.append((healthy, reason))


def make_runner(roles: dict, rise=2, fall=2, role="master", **kw):
    rec = Recorder()
    runner = CheckRunner(lambda r: [p.check for p in roles[r]], interval=1.0, rise=rise, fall=fall,
                         on_change=rec, clock=lambda: 0.0, role=role, **kw)
    return runner, rec


def test_runner_reports_the_failing_check_in_one_sentence():
    grpc, ctr = FakeProbe("grpc"), FakeProbe("container")
    runner, rec = make_runner({"master": [ctr, grpc]})
    assert runner.run_once() is None
    assert runner.run_once() is True
    assert rec.changes == [(True, "container and grpc checks passed 2 times in a row")]
    grpc.ok, grpc.reason = False, "Milvus did not answer CheckHealth within 1.0s"
    assert runner.run_once() is None
    assert runner.run_once() is False
    assert rec.changes[-1] == (False, "grpc check failed 2 times: Milvus did not answer CheckHealth within 1.0s")
    assert [r.name for r in runner.last_results()] == ["container", "grpc"]
    assert runner.healthy is False


def test_set_role_switches_checks_and_resets_hysteresis():
    m, b = FakeProbe("grpc"), FakeProbe("standby")
    runner, rec = make_runner({"master": [m], "backup": [b]}, rise=1, fall=1)
    assert runner.run_once() is True
    runner.set_role("backup")
    assert runner.healthy is None and runner.last_results() == []
    assert runner.run_once() is True          # reported again: the state was reset
    assert (m.calls, b.calls) == (1, 1)
    assert rec.changes[-1] == (True, "standby check passed 1 time in a row")


def test_role_without_checks_counts_as_healthy():
    runner, rec = make_runner({"backup": []}, rise=1, role="backup")
    assert runner.run_once() is True
    assert rec.changes == [(True, "role backup has no checks, so it counts as healthy")]


def test_a_raising_check_is_a_failed_result():
    def boom() -> CheckResult:
        raise OSError("disk on fire")

    rec = Recorder()
    runner = CheckRunner(lambda r: [boom], interval=1.0, rise=1, fall=1, on_change=rec, role="master")
    assert runner.run_once() is False
    assert rec.changes == [(False, "boom check failed 1 time: boom check raised OSError: disk on fire")]


def test_a_stuck_check_is_cut_at_its_timeout_and_not_restarted():
    p = FakeProbe("grpc", timeout=0.05)
    runner, rec = make_runner({"master": [p]}, rise=1, fall=2, grace=0.05)
    try:
        assert runner.run_once() is True      # a first answer teaches the runner its name
        p.blocking = True
        assert runner.run_once() is None
        assert runner.last_results()[0].reason == "grpc check did not finish within 0.05s"
        assert runner.run_once() is False     # third cycle: still stuck, not started again
        assert p.calls == 2
        assert rec.changes[-1] == (False, "grpc check failed 2 times: grpc check is still stuck in an earlier run")
    finally:
        p.block.set()


def test_unanswered_probe_is_named_by_its_marker():
    from havip.checks.probes import MilvusProbe

    runner, _ = make_runner({"master": []})
    assert runner._name(MilvusProbe("198.18.0.1:1", 1.0).check) == "grpc"


def test_timeout_is_read_through_partial():
    p = FakeProbe("standby", timeout=7.0)
    runner, _ = make_runner({"master": []})
    assert runner._timeout_of(functools.partial(p.check)) == 7.0
    assert runner._timeout_of(lambda: None) == 1.0   # default: the interval


def test_callback_failure_does_not_stop_the_runner():
    p = FakeProbe("grpc")

    def bad(healthy, reason):
        raise RuntimeError("loop closed")

    runner = CheckRunner(lambda r: [p.check], interval=1.0, rise=1, fall=1, on_change=bad, role="master")
    assert runner.run_once() is True
    assert runner.healthy is True


def test_thread_runs_on_schedule_and_stops():
    p = FakeProbe("grpc")
    got = threading.Event()
    rec = []

    def on_change(healthy, reason):
        rec.append(healthy)
        got.set()

    runner = CheckRunner(lambda r: [p.check], interval=0.01, rise=3, fall=1, on_change=on_change, role="master")
    runner.start()
    try:
        assert got.wait(5)
    finally:
        runner.stop()
    assert rec == [True] and p.calls >= 3
    calls = p.calls
    threading.Event().wait(0.05)
    assert p.calls == calls


# ---------------------------------------------------------------- fence (issue 10)


class FenceRecorder(Recorder):
    def __init__(self):
        super().__init__()
        self.fences: list[bool] = []

    def __call__(self, healthy: bool, reason: str, fence: bool = False) -> None:
        super().__call__(healthy, reason)
        self.fences.append(fence)


def test_a_failed_lease_check_fences_the_master_at_once_without_waiting_for_fall():
    lease, grpc = FakeProbe("lease"), FakeProbe("grpc")
    rec = FenceRecorder()
    runner = CheckRunner(lambda r: [grpc.check, lease.check], interval=1.0, rise=1, fall=3, on_change=rec,
                         clock=lambda: 0.0, role="master", fence=("lease",))
    assert runner.run_once() is True
    lease.ok, lease.reason = False, "cannot write the storage lease /s/.havip-lease: Input/output error"
    assert runner.run_once() is False                       # the first failure, not the third
    assert rec.changes[-1] == (False, "lease check failed: cannot write the storage lease /s/.havip-lease: "
                                      "Input/output error")
    assert rec.fences[-1] is True and runner.healthy is False
    assert runner.run_once() is None and len(rec.changes) == 2   # said once


def test_a_lease_check_stuck_past_its_timeout_fences_too():
    lease = FakeProbe("lease", timeout=0.05)
    rec = FenceRecorder()
    runner = CheckRunner(lambda r: [lease.check], interval=1.0, rise=1, fall=3, on_change=rec,
                         role="master", fence=("lease",), grace=0.05)
    assert runner.run_once() is True
    lease.blocking = True                                   # the storage hangs
    assert runner.run_once() is False
    assert rec.fences[-1] is True and "did not finish within" in rec.changes[-1][1]
    lease.block.set()


def test_a_fence_check_on_a_backup_goes_through_the_hysteresis():
    lease = FakeProbe("lease")
    rec = FenceRecorder()
    runner = CheckRunner(lambda r: [lease.check], interval=1.0, rise=1, fall=2, on_change=rec,
                         clock=lambda: 0.0, role="backup", fence=("lease",))
    lease.ok = False
    assert runner.run_once() is None
    assert runner.run_once() is False and rec.fences == [False]


# ------------------------------------------- the fence's timing on a hung storage (fake clock)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _hung_storage_runner(fault_at: float, *, grpc_hangs: bool = False):
    """A master's runner on a fake clock whose lease check hangs from `fault_at` on.
    The loop's sleep and the wait for a check advance the fake clock: a check that
    answers does so at once; one that hangs costs the runner its whole wait."""
    clock, release, fenced_at = FakeClock(), threading.Event(), []

    def lease_check() -> CheckResult:
        if clock.now >= fault_at:
            release.wait(10)                         # the write blocks in the kernel
        return CheckResult("lease", True, "renewed", 0.0, clock.now)
    lease_check.check_name, lease_check.timeout = "lease", 1.0

    def grpc_check() -> CheckResult:
        if grpc_hangs and clock.now >= fault_at:
            release.wait(10)
        return CheckResult("grpc", True, "serving", 0.0, clock.now)
    grpc_check.check_name, grpc_check.timeout = "grpc", 1.0

    def on_change(healthy: bool, reason: str, fence: bool = False) -> None:
        if fence:
            fenced_at.append((clock.now, reason))

    def wait(seconds: float) -> None:
        clock.now += seconds
        if clock.now > fault_at + 5:
            runner.stop()

    def join(t: threading.Thread, seconds: float) -> None:
        t.join(0.3)                                  # real time: an answering check is done by then
        if t.is_alive():
            clock.now += seconds                     # a hung one: its whole deadline passes

    runner = CheckRunner(lambda r: [grpc_check, lease_check], interval=1.0, rise=1, fall=3, on_change=on_change,
                         clock=clock, role="master", fence=("lease",), wait=wait, join=join)
    return runner, release, fenced_at


@pytest.mark.parametrize("fault_at", [3.01, 3.3, 3.49, 3.51, 3.99])
def test_a_hung_lease_check_is_fenced_within_check_interval_plus_1s(fault_at):
    """Issue 10's target with the defaults (check_interval 1 s, check_timeout 1 s). The
    runner before this fix started the lease check only with each round and waited
    timeout + the 0.5 s grace: fenced at the next round + 1.5 s, up to 2.5 s after the
    fault (3.01 -> 5.5) where the target is 2 s. Now the lease check also runs halfway
    between rounds with no grace: at worst interval / 2 + timeout = 1.5 s."""
    runner, release, fenced_at = _hung_storage_runner(fault_at)
    try:
        runner._loop()
    finally:
        release.set()
    assert len(fenced_at) == 1, fenced_at
    at, reason = fenced_at[0]
    assert at - fault_at <= 1.0 / 2 + 1.0 + 1e-9, (fault_at, at)
    assert reason == "lease check failed: lease check did not finish within 1.0s"


def test_the_fence_fires_at_the_lease_deadline_not_after_a_slower_check_of_the_round():
    """A storage that hangs hangs Milvus too: its gRPC check waits for its deadline and
    the grace. The fence does not wait for it (before: it came only with the round's end)."""
    runner, release, fenced_at = _hung_storage_runner(3.0, grpc_hangs=True)
    try:
        runner._loop()
    finally:
        release.set()
    assert [at for at, _ in fenced_at] == [4.0]       # the round at 3.0 + the lease's 1 s, not + 1.5 s


def test_between_rounds_only_the_fence_checks_run_and_they_feed_no_hysteresis():
    lease, grpc = FakeProbe("lease"), FakeProbe("grpc")
    rec = FenceRecorder()
    runner = CheckRunner(lambda r: [grpc.check, lease.check], interval=1.0, rise=1, fall=3, on_change=rec,
                         clock=lambda: 0.0, role="master", fence=("lease",))
    assert runner.run_once() is True
    assert runner.run_fence_checks() is None and (lease.calls, grpc.calls) == (2, 1)
    assert rec.changes == [(True, "grpc and lease checks passed 1 time in a row")]
    lease.ok, lease.reason = False, "cannot write the storage lease: Input/output error"
    assert runner.run_fence_checks() is False and rec.fences == [False, True]
    assert runner.run_fence_checks() is None and lease.calls == 3    # fenced: nothing more between rounds
    runner.set_role("backup")
    assert runner.run_fence_checks() is None
