"""Real-time scheduling for the loop thread (keepalived's `vrrp_rt_priority`).

At VRRPv3 0.1 s a backup declares the master dead after 0.36 s without an advert; a
loop thread that busy processes keep off the CPU for that long causes a takeover nobody
asked for. `realtime_priority: N` puts the loop thread, and only it, on SCHED_RR N.

Linux schedules threads, not processes: `sched_setscheduler(0, ...)` changes the calling
thread. Threads it creates afterwards would inherit the policy, so it is set with
SCHED_RESET_ON_FORK: the check, container, hook and control threads the loop starts, and
the hook scripts they run, begin at SCHED_OTHER (the kernel does this; no thread has to
remember to reset itself). The loop still shares the interpreter lock with them: a worker
holding it delays the loop until that worker is scheduled again (they mostly wait on I/O,
which releases it).

A refusal (EPERM: no CAP_SYS_NICE and RLIMIT_RTPRIO too low, systemd's
RestrictRealtime=yes, a cgroup without a real-time budget) is a warning and the daemon
runs at normal priority: the scheduling makes timers robust, it is not needed for
correctness.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

POLICY_NAMES = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_RR: "SCHED_RR", os.SCHED_FIFO: "SCHED_FIFO",
                getattr(os, "SCHED_BATCH", 3): "SCHED_BATCH", getattr(os, "SCHED_IDLE", 5): "SCHED_IDLE"}
RESET_ON_FORK = getattr(os, "SCHED_RESET_ON_FORK", 0x40000000)
SUBSECOND_ADVICE = ("adverts more often than once a second leave a backup 3 intervals of tolerance; on a "
                    "loaded host a loop at normal priority can miss that and cause a takeover; consider "
                    "realtime_priority: 10 (keepalived's vrrp_rt_priority)")


@dataclass(frozen=True)
class Scheduling:
    """What the loop thread runs at, and why (shown in `havipctl status`)."""

    requested: int          # the configured realtime_priority (0 = off)
    policy: str             # what the loop thread actually runs at
    priority: int
    detail: str             # one sentence: applied, off, or why it was refused

    def view(self) -> dict:
        return asdict(self)


def advice(interval: float, priority: int) -> str | None:
    """A warning for `check-config` and the start-up log, or None."""
    if priority == 0 and interval < 1:
        return f"realtime_priority: 0: {SUBSECOND_ADVICE}"
    return None


def apply(priority: int, *, setscheduler: Callable = os.sched_setscheduler,
          getscheduler: Callable = os.sched_getscheduler, getparam: Callable = os.sched_getparam) -> Scheduling:
    """Put the calling thread on SCHED_RR `priority` (0: leave it as it is). Never raises."""
    if priority:
        try:
            setscheduler(0, os.SCHED_RR | RESET_ON_FORK, os.sched_param(priority))
        except OSError as exc:
            policy, prio = _current(getscheduler, getparam)
            return Scheduling(priority, policy, prio, f"refused by the kernel ({exc.strerror or exc}): {_why(exc)}; "
                                                      "running at normal priority")
        policy, prio = _current(getscheduler, getparam)
        return Scheduling(priority, policy, prio, f"loop thread at {policy} {prio}; other threads at SCHED_OTHER")
    policy, prio = _current(getscheduler, getparam)
    return Scheduling(0, policy, prio, "off (realtime_priority: 0)")


def _current(getscheduler: Callable, getparam: Callable) -> tuple[str, int]:
    try:
        policy = getscheduler(0) & ~RESET_ON_FORK
        return POLICY_NAMES.get(policy, str(policy)), getparam(0).sched_priority
    except OSError:
        return "unknown", 0


def _why(exc: OSError) -> str:
    import errno

    if exc.errno == errno.EPERM:
        return ("needs CAP_SYS_NICE or RLIMIT_RTPRIO >= the priority (systemd: LimitRTPRIO=, and "
                "RestrictRealtime=no), and a cgroup with a real-time budget")
    if exc.errno == errno.EINVAL:
        return "the kernel does not accept this policy or priority"
    return "see the error"
