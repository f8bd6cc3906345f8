"""The receive path: bytes off the VRRP socket -> an advert for the machine, or a drop
that is counted by reason, logged, and (for a peer configured differently) warned about."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from havip.config import Config
from havip.model import Advert, Drop, DropReason
from havip.protocol import checks, codec

# A peer whose adverts we drop for these reasons believes it is alone: both hosts become
# master (a VRRPv2 interval or password mismatch). Say so loudly, not only at debug.
LOUD_DROPS = {DropReason.AUTH_MISMATCH, DropReason.INTERVAL_MISMATCH, DropReason.BAD_VERSION}
WARN_EVERY = 60.0


class Receiver:
    def __init__(self, *, log, clock: Callable[[], float], metrics=None):
        self.log = log
        self.clock = clock
        self.metrics = metrics
        self.drops: Counter[str] = Counter()
        self.received = 0
        self.mismatches_accepted = 0
        self._warned: dict[tuple[str, str], float] = {}

    def handle(self, pkt, cfg: Config, own: set[str]) -> Advert | None:
        """One received packet: the advert if it passes every check, else None (counted)."""
        self.received += 1
        if self.metrics:
            self.metrics.adverts_received.inc()
        result = codec.decode(pkt.payload, src=pkt.src, dst=pkt.dst, ttl=pkt.ttl, family=cfg.family)
        if not isinstance(result, Drop):
            result = checks.check(result, cfg, own_addresses=own) or result
        if isinstance(result, Drop):
            self._drop(result, pkt.src)
            return None
        mismatch = checks.address_mismatch(result, cfg)
        if mismatch:
            # Accepted (a rolling config change must not make two masters), but counted.
            self.mismatches_accepted += 1
            self.log.warning("address_mismatch", detail=mismatch, src=pkt.src)
        return result

    def _drop(self, drop: Drop, src: str) -> None:
        reason = str(drop.reason)
        self.drops[reason] += 1
        if self.metrics:
            self.metrics.drops.labels(reason=reason).inc()
        self.log.debug("advert_dropped", reason=reason, detail=drop.detail, src=src)
        if drop.reason not in LOUD_DROPS:
            return
        key, now = (reason, src), self.clock()
        if now - self._warned.get(key, -1e9) >= WARN_EVERY:
            self._warned[key] = now
            self.log.warning("peer_misconfigured", reason=reason, detail=drop.detail, src=src)
