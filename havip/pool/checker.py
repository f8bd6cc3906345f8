"""One thread per member, each checking its member every `interval` seconds.

A member's check has its own deadline (gRPC's, `timeout`), and it runs on its own
thread, so a hung node delays nobody else's checks. Results are posted to the loop
(`post(address, result)`); only the loop decides membership.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from havip.pool.probe import Result

Check = Callable[[], Result]


class MemberChecker(threading.Thread):
    def __init__(self, address: str, check: Check, interval: float, post: Callable[[str, Result], None],
                 *, clock: Callable[[], float] = time.monotonic):
        super().__init__(name=f"havip-pool-check {address}", daemon=True)
        self.address, self.check, self.interval, self.post, self.clock = address, check, interval, post, clock
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            began = self.clock()
            try:
                result = self.check()
            except Exception as exc:  # noqa: BLE001 - a raising check is a failed check with its reason
                now = self.clock()
                result = Result(False, f"{self.address}: check raised {type(exc).__name__}: {exc}", now - began, now)
            if self.stopping.is_set():
                break
            self.post(self.address, result)
            self.stopping.wait(max(0.0, self.interval - (self.clock() - began)))
        close = getattr(self.check, "close", None)
        if close is not None:
            close()

    def stop(self) -> None:
        self.stopping.set()
