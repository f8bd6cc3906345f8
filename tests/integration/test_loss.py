"""Issue 10, fault matrix: 30 % packet loss on the bridge for 20 s (`make loss`: 60 s,
figures in docs/benchmarks-loss.md), a real havip pair, VRRPv2 at 1 s and VRRPv3 at 0.1 s.

With independent loss a backup *must* take over whenever it misses 3 adverts in a row (its
master-down interval is 3 intervals plus a skew below one interval): at 30 % a run of 3
begins after 1.9 % of the adverts ((1 - 0.3) x 0.3^3), so over 20 adverts (v2, 20 s) at least one takeover happens 31 % of the
time, and 69 % over 60 s. "Zero transitions at 1 s" is therefore not what a correct VRRP
does; what is asserted is that no takeover is spurious: the master never moves, and the
backup takes over exactly once per run of lost adverts long enough (counted by a sniffer on
the backup), never on fewer. At 0.1 s the skew leaves 64 ms of scheduling slack before 2
lost adverts look like 3, so there a takeover after a run one short is allowed (and
counted in the benchmark), and a run of 3 that ends 35 ms after the backup's timer may
not cause one if the backup was scheduled late: the test asserts one after every run of 4.
"""

from __future__ import annotations

import json

import pytest

from havip.lab.loss import measure
from tests.conftest import require_binary

SECONDS = 20


@pytest.mark.parametrize("version, interval", [(2, 1.0), (3, 0.1)], ids=["v2-1s", "v3-0.1s"])
def test_loss_on_the_bridge_causes_no_spurious_takeover(topology, tmp_path, version, interval):
    require_binary("nft")
    r = measure(topology, tmp_path, version=version, interval=interval, seconds=SECONDS, percent=30)
    print(f"\nloss {version}/{interval}s: {json.dumps(r, sort_keys=True)}")
    assert r["dropped"] > 0 and r["adverts_heard"] < r["adverts_sent"], r
    assert r["master_transitions"] == 0, f"the master moved under loss: {r}"
    assert r["backup_transitions"] == 2 * r["takeovers"], f"the backup did not return after each takeover: {r}"
    if version == 2:
        assert r["takeovers"] == r["runs_long_enough"], f"takeovers do not match runs of 3 lost adverts: {r}"
    else:
        # 3 lost adverts leave the backup's timer 35 ms before the 4th arrives, 2 lost leave
        # the master 64 ms of slack: on a shared CI machine assert with one advert of margin
        # each way (never a takeover after 1 lost, always one after 4), and count the rest.
        assert r["runs_one_more"] <= r["takeovers"] <= r["runs_long_enough"] + r["runs_one_short"], r
