"""Membership: which read nodes are in the pool, decided from check results. Pure.

`observe(member, ok, reason, now, rise, fall)` returns the member's new record and, when
it joins or leaves the pool, the sentence that says why (logged, shown by `havipctl
pool status`, asserted by the tests). No clock is read here: `now` is the caller's
monotonic time, so the hysteresis is tested with a fake clock.

A member starts unknown and its first result decides (a restarted pool must not keep
healthy nodes out for `rise` intervals, nor send reads to a dead one); after that it
takes `fall` failures in a row to leave and `rise` passes in a row to come back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Member:
    address: str
    healthy: bool | None = None       # None: not checked yet
    since: float | None = None        # monotonic time of the last change
    passes: int = 0                   # in a row
    fails: int = 0                    # in a row
    reason: str = "not checked yet"   # why it is in or out (the sentence of the last change)
    last_reason: str = ""             # what the last check said
    last_latency: float | None = None
    checks: int = 0
    changes: int = 0


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times in a row"


def observe(m: Member, ok: bool, reason: str, now: float, rise: int, fall: int,
            latency: float | None = None) -> tuple[Member, str | None]:
    """Feed one check result; (new record, sentence if it joined or left the pool)."""
    passes, fails = (m.passes + 1, 0) if ok else (0, m.fails + 1)
    m = replace(m, passes=passes, fails=fails, last_reason=reason, last_latency=latency, checks=m.checks + 1)
    if m.healthy is None:
        # unknown -> in / out: the first result decides
        verdict = ok
        said = (f"in the pool: its first check passed ({reason})" if ok
                else f"out of the pool: its first check failed ({reason})")
    elif not m.healthy and ok and passes >= rise:
        # out -> in
        verdict, said = True, f"back in the pool: checks passed {_times(passes)} ({reason})"
    elif m.healthy and not ok and fails >= fall:
        # in -> out
        verdict, said = False, f"out of the pool: checks failed {_times(fails)}: {reason}"
    else:
        return m, None
    return replace(m, healthy=verdict, since=now, reason=said, changes=m.changes + 1), said


def membership(members: dict[str, Member]) -> dict[str, bool]:
    """address -> in the pool; an unchecked member is out."""
    return {a: m.healthy is True for a, m in members.items()}
