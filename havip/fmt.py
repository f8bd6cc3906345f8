"""Numbers in the sentences that logs, `havipctl status` and tests share."""

from __future__ import annotations


def fmt_seconds(t: float) -> str:
    """1.0 -> "1.0s", 0.25 -> "0.25s": enough digits to be exact, at least one decimal."""
    return f"{t:.1f}s" if round(t, 1) == t else f"{t:g}s"
