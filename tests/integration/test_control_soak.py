"""The control-socket soak (issue 9): 30 s of bursts of 1,000 concurrent `status`,
slow clients, held connections and garbage against the real Daemon loop in its own
process. Functional assertions only; lateness is recorded by `make soak` (bench/)."""

from __future__ import annotations

from tests.control_soak import soak


def test_control_socket_soak(tmp_path):
    stats = soak(30, str(tmp_path))
    daemon = stats["daemon"]
    assert daemon is not None and stats["daemon_exit"] == 0, stats
    assert not stats["daemon_stderr_traceback"], stats
    assert daemon["loop_fd_errors"] == 0, stats                       # no EMFILE in the loop
    assert stats["bursts"] >= 2 and stats["burst_failed"] == 0, stats  # 1,000 concurrent: all answered
    assert stats["monitor_ok"] >= 5 and stats["monitor_failed"] == 0, stats
    assert stats["slow_closed"] >= 50 and stats["slow_open_longest_s"] < 6.5, stats
    assert daemon["adverts"] >= 50, stats                              # the loop kept advertising
    print("control soak (30 s):", stats)
