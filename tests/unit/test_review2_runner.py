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
