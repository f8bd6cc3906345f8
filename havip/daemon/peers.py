"""What this host knows of the other routers on its link: who sent adverts, and what the
havip peers say of themselves in their beacons (state, health, pause)."""

from __future__ import annotations

from havip.net.beacon import PeerState

PEER_WINDOW = 60.0      # status lists routers heard within this many seconds
PEER_FRESH = 3.5        # a beacon older than this no longer vouches for a standby


class Peers:
    def __init__(self) -> None:
        self._adverts: dict[str, float] = {}
        self._beacons: dict[str, tuple[PeerState, float]] = {}

    def heard_advert(self, src: str, now: float) -> None:
        self._adverts[src] = now

    def heard_beacon(self, peer: PeerState, now: float) -> None:
        self._beacons[peer.src] = (peer, now)

    def standby(self, now: float) -> list[str]:
        """havip backups heard recently that say they could serve and are not paused."""
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
