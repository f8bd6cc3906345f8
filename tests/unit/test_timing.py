"""RFC timing against values worked out by hand.

RFC 3768 6.1 (v2): Skew_Time = (256 - Priority) / 256, whatever the interval.
RFC 5798 6.1 (v3): Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256.
Both: Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
"""

from __future__ import annotations

import pytest

from havip.protocol.timing import (
    master_down_interval,
    skew_time,
    v3_centis_to_interval,
    v3_interval_to_centis,
)

# version, priority, interval (s), skew (s), master down (s); n/256 written out.
TABLE = [
    (2, 91, 1, 0.64453125, 3.64453125),        # 165/256
    (2, 110, 1, 0.5703125, 3.5703125),         # 146/256
    (2, 91, 2, 0.64453125, 6.64453125),        # v2 skew does not scale with the interval
    (2, 255, 1, 0.00390625, 3.00390625),       # 1/256: the owner waits least
    (2, 1, 1, 0.99609375, 3.99609375),         # 255/256
    (2, 100, 3, 0.609375, 9.609375),           # 156/256
    (3, 91, 0.1, 0.064453125, 0.364453125),    # 165 * 0.1 / 256
    (3, 110, 0.5, 0.28515625, 1.78515625),     # 146 * 0.5 / 256
    (3, 91, 1, 0.64453125, 3.64453125),        # at 1 s v3 equals v2
    (3, 255, 1, 0.00390625, 3.00390625),
    (3, 1, 40.95, 40.7900390625, 163.6400390625),  # 255 * 40.95 / 256, the largest
    (3, 100, 0.01, 0.00609375, 0.03609375),    # 156 * 0.01 / 256, the smallest
]


@pytest.mark.parametrize("version,priority,interval,skew,down", TABLE)
def test_skew_and_master_down(version, priority, interval, skew, down):
    assert skew_time(version, priority, interval) == pytest.approx(skew, abs=1e-8)
    assert master_down_interval(version, priority, interval) == pytest.approx(down, abs=1e-8)


@pytest.mark.parametrize("seconds,centis", [
    (0.01, 1), (0.07, 7), (0.1, 10), (0.5, 50), (1, 100), (1.5, 150), (40.95, 4095),
])
def test_v3_interval_centiseconds(seconds, centis):
    # RFC 5798 5.2.7: 12 bits of centiseconds; floats like 0.07 * 100 must round, not truncate.
    assert v3_interval_to_centis(seconds) == centis
    assert v3_centis_to_interval(centis) == pytest.approx(seconds)


def test_higher_priority_always_times_out_first():
    # RFC 5798 6.1: the skew makes the highest-priority backup take over first.
    for version, interval in ((2, 1), (3, 0.1), (3, 1)):
        downs = [master_down_interval(version, p, interval) for p in range(1, 256)]
        assert downs == sorted(downs, reverse=True) and len(set(downs)) == 255
