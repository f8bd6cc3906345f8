"""Bounded log rate limiting: one line per key per window, a few lines per window overall.

Whatever arrives from the network chooses its own keys (a source address, a reason), so
the limiter forgets: it remembers at most `max_keys` keys (the least recently warned
are forgotten first, which can only make a line come sooner, never more lines than
`burst` per window) and the memory is bounded however many sources there are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class RateLimiter:
    """`allow(key, now)`: True at most once per `every` seconds per key, and at most
    `burst` times per `every` seconds over all keys. `suppressed` counts the refusals
    since the last allowed line, so that line can say how many were left out."""

    def __init__(self, every: float = 60.0, *, burst: int = 10, max_keys: int = 256):
        self.every = every
        self.burst = burst
        self.max_keys = max_keys
        self._last: OrderedDict[Hashable, float] = OrderedDict()
        self._window_start = float("-inf")
        self._in_window = 0
        self.suppressed = 0

    def __len__(self) -> int:
        return len(self._last)

    def allow(self, key: Hashable, now: float) -> bool:
        if now - self._window_start >= self.every:
            self._window_start, self._in_window = now, 0
        last = self._last.get(key)
        if (last is not None and now - last < self.every) or self._in_window >= self.burst:
            self.suppressed += 1
            return False
        self._in_window += 1
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True

    def take_suppressed(self) -> int:
        """How many lines were left out since the last call (and reset the count)."""
        n, self.suppressed = self.suppressed, 0
        return n
