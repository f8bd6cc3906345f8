"""Review of cd8e59a at the daemon: a real loop, a real CheckRunner whose container check
reads the fake runtime (final when the container is not running, as Docker's "exited"),
and a trigger the test fires where dockerd would send `die`. The schedule is an hour
away and `fall` is 3, so only a kick and the final rule can move anything."""

from __future__ import annotations

import threading

from havip.checks.probes import CheckResult
from havip.checks.runner import CheckRunner
from havip.model import FailoverRequested, State
from tests.unit.test_daemon import _become_master, make, run_until


class Trigger:
    def __init__(self):
        self.kick = None

    def start(self, kick):
        self.kick = kick

    def stop(self):
        pass


def _wire(d, rt, trigger: Trigger, gate: threading.Event | None = None):
    def container() -> CheckResult:
        if gate is not None:
            gate.wait(10)
        if rt.running:
            return CheckResult("container", True, "container milvus is running (no healthcheck)", 0.0, 0.0)
        return CheckResult("container", False, "container milvus is not running (exited, exit code 137)", 0.0, 0.0,
                           final=True)
    container.check_name, container.timeout = "container", 30.0

    def probes(role: str):
        return [container] if role == "master" else []
    d.ad.make_runner = lambda on_change: CheckRunner(probes, 3600.0, 1, 3, on_change, triggers=(trigger,))


def test_a_kill_under_the_master_is_handed_over_on_the_kick():
    d, sock, vips, link, clock, rt = make(milvus=True)
    trigger = Trigger()
    _wire(d, rt, trigger)
    try:
        _become_master(d, clock)
        assert run_until(d, lambda: d._runner.role == "master" and d.machine.healthy is True, 10)
        rt.running = False                          # killed behind havip's back
        trigger.kick("container milvus: Docker event die")
        assert run_until(d, lambda: d.machine.state == State.FAULT, 10)
        assert "container check failed 1 time: " in d.machine.reason and d.machine.hold   # one round, not fall 3
    finally:
        d.close()


def test_the_die_of_havips_own_stop_in_a_switchover_is_no_failure():
    # A round of the master's checks is out when the operator asks for the switchover;
    # havip stops the container (the engine says die: kicked) and the round comes back
    # with "exited", final. The switchover stays a switchover: backup, not fault.
    d, sock, vips, link, clock, rt = make(milvus=True)
    trigger = Trigger()
    gate = threading.Event()
    gate.set()
    _wire(d, rt, trigger, gate)
    try:
        _become_master(d, clock)
        assert run_until(d, lambda: d._runner.role == "master" and d.machine.healthy is True, 10)
        gate.clear()
        trigger.kick("container milvus: Docker event oom")      # a round goes out and waits
        d.feed(FailoverRequested())
        assert d.machine.leaving == State.BACKUP and d._runner.role == "none"
        assert run_until(d, lambda: not rt.running, 10)          # havip's own stop
        trigger.kick("container milvus: Docker event die")
        gate.set()                                               # the round sees "exited"
        clock.advance(1.1)
        assert run_until(d, lambda: d.machine.state == State.BACKUP and d.machine.leaving is None, 10)
        assert run_until(d, lambda: not d._events and not d.executor.busy(), 10)
        assert d.machine.state == State.BACKUP
        assert all(h["to"] != str(State.FAULT) for h in d.history)
    finally:
        gate.set()
        d.close()
