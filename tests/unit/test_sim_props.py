"""Two hosts, one Milvus, over the simulator that behaves like the real executor (sim.py).

Random priorities 1..255 (the address owner included), VRRP v2 and v3, random durations
for starts, stops and lease operations that queue behind each other on one worker, late
and duplicated answers, engines that hang, reloads that change the advert interval, split
brains (with the lease) and fences. The invariants are checked on every event; see
tests/unit/sim.py. The budget is kept to a few seconds for CI.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from havip.core.machine import Params, check_role
from havip.model import FailoverRequested, HealthChanged, Shutdown, Startup, State
from tests.unit.sim import Sim

INCIDENTS = ("fail-master-checks", "failover", "restart", "start-fails", "start-ok", "engine-hangs",
             "engine-back", "reload", "partition", "heal", "fence", "backup-checks-fail", "checks-pass")


def _incident(net: Sim, i: int, what: str, t: float, rng: random.Random) -> float:
    """Schedule one incident at `t`; return how long to leave it alone."""
    h = net.hosts[i]
    if what == "fail-master-checks":
        net.at(t, i, HealthChanged(healthy=False, reason="grpc timeout", role=check_role(h.m)))
    elif what == "fence":
        net.at(t, i, HealthChanged(healthy=False, reason="lease check failed: EIO", role=check_role(h.m),
                                   fence=True))
    elif what == "backup-checks-fail":
        net.at(t, i, HealthChanged(healthy=False, reason="disk full", role="backup"))
    elif what == "checks-pass":
        net.at(t, i, HealthChanged(healthy=True, reason="ok", role="backup"))
    elif what == "failover":
        net.at(t, i, FailoverRequested(force=False))
    elif what == "restart":
        if h.stop_ok:
            # A clean restart: the Startup comes once the old process has stopped.
            net.at(t, i, Shutdown())
            return 40.0
    elif what == "start-fails":
        h.ready_ok = False
    elif what == "start-ok":
        h.ready_ok = True
    elif what == "engine-hangs":
        h.stop_ok = False
    elif what == "engine-back":
        h.stop_ok = True
    elif what == "reload":
        # Both hosts, a moment apart, as an operator would with two SIGHUPs.
        iv = rng.choice([1.0, 2.0, 5.0]) if h.p.version == 2 else rng.choice([0.5, 1.0, 2.0])
        net.reload(t, i, interval=iv)
        net.reload(t + rng.uniform(0.0, 0.5), 1 - i, interval=iv)
    elif what == "partition" and h.p.lease:
        net.partitioned = True
    elif what == "heal":
        net.partitioned = False
    return 0.0


def _restart_stopped(net: Sim, t: float) -> None:
    for i, h in enumerate(net.hosts):
        if h.m.state == State.STOPPED and not any(ev is not None and isinstance(ev, Startup) and j == i
                                                  for _, _, j, ev in net.queue):
            net.at(t, i, Startup())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from([2, 3]),
    prios=st.lists(st.integers(1, 255), min_size=2, max_size=2, unique=True),
    lease=st.booleans(),
    preempt=st.booleans(),
    delays=st.tuples(st.sampled_from([0.5, 2.0, 8.0]), st.sampled_from([1.0, 5.0, 20.0]),
                     st.sampled_from([0.0, 0.05, 3.0])),          # stop, start, lease operations
    seed=st.integers(0, 2**32 - 1),
    plan=st.lists(st.tuples(st.integers(1, 20), st.integers(0, 1), st.sampled_from(INCIDENTS)), max_size=12),
)
def test_two_hosts_keep_one_writer_over_a_truthful_executor(version, prios, lease, preempt, delays, seed, plan):
    rng = random.Random(seed)
    a = Params(version=version, priority=prios[0], interval=1.0, address="10.0.0.1", supervise=True, lease=lease,
               preempt=preempt)
    b = Params(version=version, priority=prios[1], interval=1.0, address="10.0.0.2", supervise=True, lease=lease,
               preempt=preempt)
    net = Sim(a, b, rng=rng)
    for h in net.hosts:
        h.stop_delay, h.start_delay, h.acquire_delay = delays
        h.release_delay = delays[2]
    # The first host finds a container left running (the keepalived recipe's backup; issue
    # 10 holes 1 and 5). (A leftover on a host whose havip starts after the other's Milvus
    # is a window no machine can see: docs/architecture.md.)
    net.hosts[0].running = net.hosts[0].leftover = True
    net.at(0.0, 0, Startup())
    net.at(7.0, 1, Startup())
    t = 30.0
    net.run_until(t)
    for wait, i, what in plan:
        if not lease and what in ("reload",) and version == 2:
            continue  # v2 hosts drop each other's adverts between two reloads: a split brain by design
        t += wait
        net.run_until(t - 1e-9)
        _restart_stopped(net, t)
        t += _incident(net, i, what, t, rng)
    net.partitioned = False
    for h in net.hosts:
        h.stop_ok = True
    net.run_until(t + 60.0)
    _restart_stopped(net, t + 60.0)
    net.run_until(t + 200.0)
    assert net.overlaps == [], net.overlaps[:3]
    assert net.violations == [], net.violations[:3]
    # Healed, links up: two masters do not outlast the heal (a master in name only yields).
    assert [h.m.state for h in net.hosts].count(State.MASTER) <= 1, [(h.m.state, h.m.container) for h in net.hosts]
