"""What this host knows of the other routers on its link: who sent adverts, and what the
havip peers say of themselves in their beacons (state, health, pause).

A beacon is believed only if it comes from an allowed source (a unicast peer; in
multicast, a sender on the link: TTL 255), carries a valid MAC with the shared key,
claims the source it came from, is for our VRID, is recent (`ts` within MAX_SKEW of
our clock) and is newer than the last one from that source (no replay). Every table is
bounded and forgets what it has not heard for PEER_WINDOW.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict

from havip.protocol.beacon import Keyring, PeerState, Refused, decode

PEER_WINDOW = 60.0      # status lists routers heard within this many seconds
PEER_FRESH = 3.5        # a beacon older than this no longer vouches for a standby
MAX_SKEW = 30.0         # a beacon's clock may differ from ours by this much (NTP is assumed)
MAX_PEERS = 16          # beacon senders remembered (a pair needs one)
MAX_ADVERT_SOURCES = 32  # advert senders remembered for `peers_seen`
VRRP_TTL = 255


class Peers:
    def __init__(self) -> None:
        self._adverts: OrderedDict[str, float] = OrderedDict()
        self._beacons: OrderedDict[str, tuple[PeerState, float]] = OrderedDict()
        self.refused: Counter[str] = Counter()

    def heard_advert(self, src: str, now: float) -> None:
        self._adverts[src] = now
        self._adverts.move_to_end(src)
        _bound(self._adverts, MAX_ADVERT_SOURCES, lambda seen: seen, now)

    def receive_beacon(self, data: bytes, src: str, ttl: int | None, *, keyring: Keyring, vrid: int,
                       allowed: frozenset[str] | None, own: frozenset[str], now: float,
                       wall: float) -> PeerState | Refused:
        """Decide whether to believe one datagram; remember it if so. Never raises.

        `allowed`: the unicast peers (None in multicast, where TTL 255 is required
        instead); `own`: this host's addresses; `now` monotonic, `wall` the wall clock.
        """
        result = self._judge(data, src, ttl, keyring=keyring, vrid=vrid, allowed=allowed, own=own, wall=wall)
        if isinstance(result, Refused):
            self.refused[result.reason] += 1
            return result
        self._beacons[result.src] = (result, now)
        self._beacons.move_to_end(result.src)
        _bound(self._beacons, MAX_PEERS, lambda entry: entry[1], now)
        return result

    def _judge(self, data: bytes, src: str, ttl: int | None, *, keyring: Keyring, vrid: int,
               allowed: frozenset[str] | None, own: frozenset[str], wall: float) -> PeerState | Refused:
        # Who sent it, before any work: strangers cost a set lookup, not an HMAC.
        src = _canonical(src)
        if src in own:
            return Refused("own", f"our own beacon from {src}")
        if allowed is not None and src not in allowed:
            return Refused("not_a_peer", f"beacon from {src}, which is not a configured peer")
        if allowed is None and ttl is not None and ttl != VRRP_TTL:
            return Refused("bad_ttl", f"beacon from {src} with TTL {ttl}, not 255: not sent on this link")
        peer = decode(data, keyring)
        if isinstance(peer, Refused):
            return peer
        if _canonical(peer.src) != src:
            return Refused("not_a_peer", f"beacon claims to come from {peer.src} but came from {src}")
        if peer.vrid != vrid:
            return Refused("other_vrid", f"beacon for VRID {peer.vrid}, ours is {vrid}")
        if abs(peer.ts - wall) > MAX_SKEW:
            return Refused("stale", f"beacon from {src} is {peer.ts - wall:+.0f}s off our clock (more than "
                                    f"{MAX_SKEW:.0f}s: replayed, or the clocks differ; run NTP)")
        last = self._beacons.get(src)
        if last is not None and peer.ts <= last[0].ts:
            return Refused("replayed", f"beacon from {src} is not newer than the last one")
        return PeerState(**{**_fields(peer), "src": src})

    def standby(self, now: float) -> list[str]:
        """havip backups heard recently (authenticated beacons) that say they could serve
        and are not paused: what lets `havipctl failover` on a master go ahead."""
        return sorted(src for src, (p, seen) in self._beacons.items()
                      if now - seen < PEER_FRESH and p.state == "backup" and p.healthy is not False
                      and not p.paused)

    def view(self, now: float) -> dict:
        """The peers part of `havipctl status`."""
        recent = {src: (p, seen) for src, (p, seen) in self._beacons.items() if now - seen < PEER_WINDOW}
        return {
            "peers_seen": sorted({a for a, t in self._adverts.items() if now - t < PEER_WINDOW} | set(recent)),
            "standby_peers": self.standby(now),
            "peers": [{"address": src, "instance": p.instance, "state": p.state, "priority": p.priority,
                       "healthy": p.healthy, "paused": p.paused, "container": p.container,
                       "last_seen_seconds_ago": round(now - seen, 3)}
                      for src, (p, seen) in sorted(recent.items())],
        }


def _bound(table: OrderedDict, limit: int, seen_of, now: float) -> None:
    """Forget entries not heard for PEER_WINDOW, then the oldest beyond `limit`."""
    for key in [k for k, v in table.items() if now - seen_of(v) >= PEER_WINDOW]:
        del table[key]
    while len(table) > limit:
        table.popitem(last=False)


def _canonical(text: str) -> str:
    try:
        return str(ipaddress.ip_address(str(text).split("%", 1)[0]))
    except ValueError:
        return str(text)


def _fields(peer: PeerState) -> dict:
    return {name: getattr(peer, name) for name in PeerState.__slots__}
