"""Review of the check runner (merge of storage): the lease check that also runs alone
halfway between rounds, without the grace, fencing at its deadline. A fence comes only
from a check that started and ended in one master term; a storage that hangs for long
leaves one thread per check behind, not one per cycle. Fake clock; the checks are real
threads that the test holds and releases."""

from __future__ import annotations

import threading

from havip.checks.runner import CheckRunner
from havip.checks.probes import CheckResult
from tests.unit.test_hysteresis import FenceRecorder


def _check(name: str, fn):
    fn.check_name, fn.timeout = name, 1.0
    return fn


def test_a_lease_check_between_rounds_that_fails_after_the_master_left_fences_nothing():
    rec = FenceRecorder()
    runner: CheckRunner

    def lease():
        runner.set_role("backup")               # the master steps down while the write is out
        return CheckResult("lease", False, "Input/output error", 0.0, 0.0)

    checks = {"master": [_check("lease", lease)], "backup": []}
    runner = CheckRunner(lambda r: checks[r], interval=1.0, rise=1, fall=3, on_change=rec,
                         clock=lambda: 0.0, role="master", fence=("lease",))
    assert runner.run_fence_checks() is None
    assert True not in rec.fences and runner.role == "backup"
    assert runner.last_results() == []          # a stale result is not shown under the new role


def test_a_lease_check_that_started_before_the_host_became_master_fences_nothing():
    rec = FenceRecorder()
    runner: CheckRunner

    def lease():
        runner.set_role("master")               # promoted while the (backup's) check ran
        return CheckResult("lease", False, "not held by this host", 0.0, 0.0)

    lease = _check("lease", lease)
    runner = CheckRunner(lambda r: [lease], interval=1.0, rise=1, fall=3, on_change=rec,
                         clock=lambda: 0.0, role="backup", fence=("lease",))
    assert runner.run_once() is None
    assert True not in rec.fences and rec.changes == []


def test_a_storage_hung_for_long_leaves_one_thread_per_check_not_one_per_cycle():
    """60 simulated seconds of a hung storage on a master that stays master (its step-down
    is stuck too): the rounds and the checks between them start no second copy of a check
    still out; the first deadline fences, once."""
    clock, release, rec = [0.0], threading.Event(), FenceRecorder()
    started: list[str] = []

    def hung(name):
        def fn():
            started.append(name)
            release.wait(30)
            return CheckResult(name, True, "late", 0.0, clock[0])
        return _check(name, fn)

    checks = [hung("grpc"), hung("lease")]

    def advance(seconds):
        clock[0] += seconds
        if clock[0] > 60:
            runner.stop(0)

    def join(t, seconds):
        t.join(0.05)
        advance(seconds)

    wait = advance

    runner = CheckRunner(lambda r: checks, interval=1.0, rise=1, fall=3, on_change=rec, clock=lambda: clock[0],
                         role="master", fence=("lease",), wait=wait, join=join)
    try:
        runner._loop()
        alive = [t for t in threading.enumerate() if t.name == "havip-check" and t.is_alive()]
        assert sorted(started) == ["grpc", "lease"] and len(alive) <= 2
        assert rec.fences.count(True) == 1
    finally:
        release.set()


def _frozen_in_flight(then_answers: bool):
    """A master's lease check with its write out when the whole process is frozen (SIGSTOP,
    a paused VM) for 15 s. On SIGCONT the runner's wait for it is long over, and it may get
    to look before the check's own thread, resumed at the same moment, has returned."""
    clock, gate, rec, joins = [0.0], threading.Event(), FenceRecorder(), []

    def lease():
        gate.wait(5)
        return CheckResult("lease", True, "renewed", 0.0, clock[0])

    def join(t, seconds):
        joins.append(seconds)
        if len(joins) == 1:
            clock[0] += 15.0            # frozen with the write out; resumed, the wait is over
            return
        if then_answers:
            gate.set()
            t.join(5)
        else:
            clock[0] += seconds         # the storage really hangs: its whole deadline passes

    runner = CheckRunner(lambda r: [_check("lease", lease)], interval=1.0, rise=1, fall=3, on_change=rec,
                         clock=lambda: clock[0], role="master", fence=("lease",), join=join)
    try:
        result = runner.run_fence_checks()
    finally:
        gate.set()
    return result, rec, joins


def test_a_lease_check_caught_in_flight_by_a_frozen_process_is_judged_on_a_fresh_deadline():
    # Found by reading the runner for the real-server matrix's frozen havip (tests/e2e/
    # test_standalone_matrix.py; not seen in a run: the window is the few milliseconds a
    # check is out): the old runner judged the check at once and fenced a healthy master
    # (Milvus killed, a handover) because its own process had stood still.
    result, rec, joins = _frozen_in_flight(then_answers=True)
    assert result is None and True not in rec.fences, rec.changes
    assert joins == [1.0, 1.0]                  # the deadline, then one fresh deadline after the stall


def test_a_storage_still_hung_after_the_stall_is_fenced_at_the_fresh_deadline():
    result, rec, joins = _frozen_in_flight(then_answers=False)
    assert result is False and rec.fences == [True]
    assert rec.changes[-1][1] == "lease check failed: lease check did not finish within 1.0s"
