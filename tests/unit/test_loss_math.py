"""The arithmetic behind the loss test (havip.lab.loss): master-down, how many adverts a
backup must miss, the chance of such a run, and runs counted from arrival times."""

from __future__ import annotations

import itertools

import pytest

from havip.lab.loss import expected, gaps, lost_in_a_row_to_take_over, master_down


@pytest.mark.parametrize("version, interval, priority, down, run", [
    (2, 1.0, 91, 3 + 165 / 256, 3),          # RFC 3768: skew in seconds
    (3, 0.1, 91, 0.3 + 16.5 / 256, 3),       # RFC 5798: skew scaled by the interval
    (3, 1.0, 254, 3 + 2 / 256, 3),
    (2, 1.0, 1, 3 + 255 / 256, 3),
])
def test_master_down_and_the_run_that_trips_it(version, interval, priority, down, run):
    assert master_down(version, interval, priority) == pytest.approx(down)
    assert lost_in_a_row_to_take_over(version, interval, priority) == run


@pytest.mark.parametrize("n", [0, 2, 3, 4, 7, 10])
def test_expected_matches_enumeration(n):
    p, k = 0.3, 3
    p_any = mean = 0.0
    for outcome in itertools.product((0, 1), repeat=n):      # 1 = lost
        w = 1.0
        for lost in outcome:
            w *= p if lost else 1 - p
        runs = [len(list(g)) for lost, g in itertools.groupby(outcome) if lost]
        long = sum(r >= k for r in runs)
        p_any += w * (long > 0)
        mean += w * long
    e = expected(p, n, k)
    assert e.p_any == pytest.approx(p_any) and e.mean == pytest.approx(mean)


def test_the_issue_s_windows():
    assert expected(0.3, 60).p_any == pytest.approx(0.694, abs=0.001)     # v2 1 s, 60 s
    assert expected(0.3, 60).mean == pytest.approx(1.104, abs=0.001)
    assert expected(0.3, 600).mean == pytest.approx(11.31, abs=0.01)      # v3 0.1 s, 60 s


def test_gaps_count_missed_adverts_with_jitter():
    assert gaps([0.0, 0.11, 0.19, 0.52, 0.9], 0.1) == [0, 0, 2, 3]
    assert gaps([5.0], 1.0) == []
