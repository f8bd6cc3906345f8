"""The peer beacon in the daemon: which keys, when to send, what to believe.

Owned by the loop (havip.daemon.loop), on the loop thread. The socket is the adapter
(havip.net.beacon), the wire format is havip.protocol.beacon, and what is believed is
decided by havip.daemon.peers. Without a key the beacon is off and says so: an unsigned
beacon could be forged by anyone on the link (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from havip.config import Config
from havip.daemon.peers import Peers
from havip.daemon.ratelimit import RateLimiter
from havip.errors import HavipError
from havip.protocol import beacon as codec
from havip.protocol.beacon import Refused

BEACON_INTERVAL = 1.0   # seconds between peer beacons
READ_PER_TURN = 32


class BeaconService:
    def __init__(self, cfg: Config, peers: Peers, *, make_beacon: Callable[[str], Any] | None, log,
                 clock: Callable[[], float], wall: Callable[[], float], metrics=None,
                 on_error: Callable[[str, BaseException], None]):
        self.cfg = cfg
        self.peers = peers
        self.make_beacon = make_beacon
        self.log = log
        self.clock = clock
        self.wall = wall                     # timestamps (the replay guard) need the wall clock
        self.metrics = metrics
        self.on_error = on_error
        self.keyring, self.off = _load_keyring(cfg)
        self.sock = None                     # the adapter, while the link is up and a key is set
        self.due = 0.0                       # next send (monotonic); 0 sends at the next turn
        self.send_errors = 0
        self._ts = 0.0
        self._log_limit = RateLimiter(60.0, burst=5, max_keys=32)

    # ------------------------------------------------------------------ lifecycle

    def open(self, source: str) -> None:
        """Open the socket (from our VRRP `source` address), if there is a key."""
        if self.make_beacon is None or self.sock is not None or self.keyring is None:
            return
        try:
            self.sock = self.make_beacon(source)
        except HavipError as exc:
            self.log.warning("beacon_failed", error=str(exc))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def say(self) -> None:
        """At start and on reload: whether the beacon is on, and why not."""
        from havip.net.beacon import key_file_warning

        if self.off:
            self.log.warning("beacon_off", reason=self.off)
        elif self.keyring is not None:
            self.log.info("beacon_on", auth="hmac-sha256", keys=len(self.keyring))
        warning = key_file_warning(self.cfg.beacon)
        if warning:
            self.log.warning("beacon_key_exposed", reason=warning)

    def set_config(self, cfg: Config, source: str | None) -> None:
        """A reloaded config: new keys apply at once (rolling); an unreadable key file keeps
        the running keys; no key any more closes the socket."""
        self.cfg = cfg
        self.due = 0.0
        keyring, off = _load_keyring(cfg)
        if keyring is None and cfg.beacon.key_file and self.keyring is not None:
            self.log.error("beacon_keys_kept", reason=off)
            return
        self.keyring, self.off = keyring, off
        self.say()
        if self.keyring is None:
            self.close()
        elif source is not None:
            self.open(source)

    # ------------------------------------------------------------------ traffic

    def read(self, own: frozenset[str]) -> None:
        """Judge the datagrams waiting (at most READ_PER_TURN); never raises."""
        now, wall = self.clock(), self.wall()
        uni = self.cfg.unicast
        allowed = frozenset(str(p) for p in uni.peers) if uni else None
        if uni and uni.source:
            own = own | {str(uni.source)}
        for _ in range(READ_PER_TURN):
            try:
                got = self.sock.recv()
                if got is None:
                    return
                data, src, ttl = got
                result = self.peers.receive_beacon(data, src, ttl, keyring=self.keyring,
                                                   vrid=self.cfg.virtual_router_id, allowed=allowed, own=own,
                                                   now=now, wall=wall)
            except Exception as exc:  # noqa: BLE001 - a datagram must never stop the loop
                self.peers.refused["internal_error"] += 1
                self.on_error("beacon", exc)
                continue
            if isinstance(result, Refused):
                self._refused(result, src)

    def _refused(self, refused: Refused, src: str) -> None:
        if self.metrics:
            self.metrics.beacon_drops.labels(reason=refused.reason).inc()
        # A peer with another key or a wrong clock is a misconfiguration worth a warning;
        # the rest is noise from strangers: debug, and only a few lines a minute.
        level = "warning" if refused.reason in ("bad_mac", "stale") else "debug"
        if self._log_limit.allow((refused.reason, src), self.clock()):
            getattr(self.log, level)("beacon_refused", reason=refused.reason, detail=refused.detail, src=src,
                                     count=self.peers.refused[refused.reason])

    def send(self, info: dict, source: str) -> None:
        """Send `info` if a beacon is due (once a second, or at once after `due = 0`)."""
        now = self.clock()
        if self.sock is None or now < self.due:
            return
        self.due = now + BEACON_INTERVAL
        # Strictly increasing, even if the wall clock steps back: receivers refuse replays.
        self._ts = max(self.wall(), self._ts + 1e-6)
        data = codec.encode(info, keyring=self.keyring, src=self.sock.source or source, ts=self._ts)
        try:
            self.sock.send(data)
        except HavipError as exc:
            self.send_errors += 1
            self.log.debug("beacon_send_failed", error=str(exc))

    def status(self) -> dict:
        return {"auth": "hmac-sha256" if self.keyring is not None else "off",
                "keys": len(self.keyring) if self.keyring is not None else 0,
                "warning": self.off, "refused": dict(self.peers.refused), "send_errors": self.send_errors}


def _load_keyring(cfg: Config):
    """(Keyring or None, why the beacon is off or None)."""
    from havip.net.beacon import load_keyring

    if not cfg.beacon.configured:
        return None, ("no beacon key configured (beacon.key_file): peers' state is not shown and "
                      "`havipctl failover` on a master needs --force")
    try:
        return load_keyring(cfg.beacon), None
    except HavipError as exc:
        return None, f"{exc}; the beacon is off"
