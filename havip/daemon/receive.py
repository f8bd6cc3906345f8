"""The receive path: bytes off the VRRP socket -> an advert for the machine, or a drop
that is counted by reason, logged (rate-limited), and, for a peer configured differently,
warned about.

Order matters (issue 9): the checks that cost nothing and need no trust (own address,
unicast peer, TTL, VRID) come before anything loud. `checks.check` runs its rules in
that order, so a stranger on the link is counted, never warned about.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from havip.config import Config
from havip.daemon.ratelimit import RateLimiter
from havip.model import Advert, Drop, DropReason
from havip.protocol import checks, codec

# A peer whose adverts we drop for these reasons believes it is alone: both hosts become
# master (a VRRPv2 interval or password mismatch). Say so loudly, not only at debug.
LOUD_DROPS = {DropReason.AUTH_MISMATCH, DropReason.INTERVAL_MISMATCH, DropReason.BAD_VERSION}
WARN_EVERY = 60.0
DEBUG_PER_REASON = 20      # debug lines per drop reason per WARN_EVERY (the counters count all)


class Receiver:
    def __init__(self, *, log, clock: Callable[[], float], metrics=None):
        self.log = log
        self.clock = clock
        self.metrics = metrics
        self.drops: Counter[str] = Counter()
        self.received = 0
        self.mismatches_accepted = 0
        # Warnings: one per (reason, source) a minute, ten a minute overall, 256 sources remembered.
        self.limiter = RateLimiter(WARN_EVERY, burst=10, max_keys=256)
        self._debug = RateLimiter(WARN_EVERY, burst=DEBUG_PER_REASON * 4, max_keys=64)
        self._debug_counts: Counter[str] = Counter()

    def handle(self, pkt, cfg: Config, own: set[str]) -> Advert | None:
        """One received packet: the advert if it passes every check, else None (counted)."""
        self.received += 1
        if self.metrics:
            self.metrics.adverts_received.inc()
        result = codec.decode(pkt.payload, src=pkt.src, dst=pkt.dst, ttl=pkt.ttl, family=cfg.family)
        if not isinstance(result, Drop):
            result = checks.check(result, cfg, own_addresses=own) or result
        if isinstance(result, Drop):
            self.drop(result, pkt.src)
            return None
        mismatch = checks.address_mismatch(result, cfg)
        if mismatch:
            # Accepted (a rolling config change must not make two masters), but counted.
            self.mismatches_accepted += 1
            self._warn("address_mismatch", ("address_mismatch", pkt.src), detail=mismatch, src=pkt.src)
        return result

    def drop(self, drop: Drop, src: str) -> None:
        """Count a drop by reason; log it at debug (bounded) and warn for a misconfigured peer."""
        reason = str(drop.reason)
        self.drops[reason] += 1
        if self.metrics:
            self.metrics.drops.labels(reason=reason).inc()
        now = self.clock()
        self._debug_counts[reason] += 1
        if self._debug_counts[reason] <= DEBUG_PER_REASON or self._debug.allow((reason, src), now):
            self.log.debug("advert_dropped", reason=reason, detail=drop.detail, src=src)
        if drop.reason in (DropReason.MALFORMED, DropReason.INTERNAL_ERROR):
            self._warn("advert_error", (reason, src), level="error", reason=reason, detail=drop.detail, src=src)
        elif drop.reason in LOUD_DROPS:
            self._warn("peer_misconfigured", (reason, src), reason=reason, detail=drop.detail, src=src)

    def _warn(self, event: str, key, *, level: str = "warning", **fields) -> None:
        if not self.limiter.allow(key, self.clock()):
            return
        left_out = self.limiter.take_suppressed()
        if left_out:
            fields["suppressed"] = left_out
        getattr(self.log, level)(event, **fields)
