"""RFC timing, in one table-tested place.

VRRPv2, RFC 3768 section 6.1:
    Skew_Time            = (256 - Priority) / 256                      seconds
    Master_Down_Interval = 3 * Advertisement_Interval + Skew_Time
VRRPv3, RFC 5798 section 6.1 (intervals in centiseconds on the wire):
    Skew_Time            = ((256 - Priority) * Master_Adver_Interval) / 256
    Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time
"""

from __future__ import annotations


def skew_time(version: int, priority: int, master_adver_interval: float) -> float:
    """Seconds a backup adds to its master-down timer, so higher priorities win the race."""
    if version == 2:
        return (256 - priority) / 256.0
    # RFC 5798 6.1: scales with the interval the master advertises.
    return ((256 - priority) * master_adver_interval) / 256.0


def master_down_interval(version: int, priority: int, master_adver_interval: float) -> float:
    """Seconds without adverts after which a backup declares the master down."""
    return 3 * master_adver_interval + skew_time(version, priority, master_adver_interval)


def v3_interval_to_centis(seconds: float) -> int:
    """VRRPv3 carries the interval as 12 bits of centiseconds (RFC 5798 5.2.7)."""
    return int(round(seconds * 100))


def v3_centis_to_interval(centis: int) -> float:
    return centis / 100.0
