"""systemd's notify protocol (sd_notify(3)): one datagram of KEY=VALUE lines to $NOTIFY_SOCKET.

No library needed: the protocol is a single `sendto` on an AF_UNIX datagram socket.
Every method is a no-op when the daemon was not started by systemd (no NOTIFY_SOCKET),
so the loop can call them unconditionally. The watchdog is fed from the loop thread
(`kick(now)` once per cycle), never from a helper thread: a wedged loop must stop
feeding it so that systemd restarts the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(value: str) -> str | bytes | None:
    """NOTIFY_SOCKET as a socket address: a path, or '@name' for the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None     # vsock and other forms systemd may add: not supported, so silent


class SdNotify:
    """Talks to systemd, or to nobody when $NOTIFY_SOCKET is unset.

    `environ` defaults to os.environ. With `unset_environment=True` the variables are
    removed from it once read, so hook scripts and other children do not inherit them
    (sd_notify's unset_environment). A failed send never raises: the daemon must keep
    running; `errors` counts failures and `last_error` says why.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, unset_environment: bool = False):
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        self.target = raw
        self._watchdog = self._read_watchdog(env)
        if unset_environment and isinstance(env, MutableMapping):
            for key in _ENV_KEYS:
                env.pop(key, None)
        self._sock: socket.socket | None = None
        self._next_kick: float | None = None
        self.errors = 0
        self.last_error: str | None = None

    @staticmethod
    def _read_watchdog(env: Mapping[str, str]) -> float | None:
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        try:
            seconds = int(usec) / 1_000_000
        except ValueError:
            return None
        # WATCHDOG_PID names the process systemd expects pings from; if it is another
        # process (we were forked or exec'd by a wrapper), the watchdog is not ours.
        if pid and pid != str(os.getpid()):
            return None
        return seconds if seconds > 0 else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send the lines as one datagram; True when sent, False when off or failed."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(data, self.address)
            return True
        except OSError as exc:
            self.errors += 1
            self.last_error = f"cannot notify systemd at {self.target}: {exc.strerror or exc}"
            return False

    def ready(self, status: str | None = None) -> bool:
        """READY=1: the daemon has joined the network (systemd then runs the next units)."""
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        """RELOADING=1 before re-reading the config; send ready() when done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown has begun (the handover may take a while)."""
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        """STATUS=: the line `systemctl status` shows, e.g. 'master: taking over'."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """WATCHDOG=1: the loop is alive."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """WatchdogSec= in seconds, or None when the watchdog is off or not for this process."""
        return self._watchdog if self.enabled else None

    def kick(self, now: float) -> bool:
        """Feed the watchdog if due: call once per loop cycle with the loop's monotonic `now`.

        Pings every interval/2, as sd_watchdog_enabled(3) recommends; the first call pings
        at once. Returns True when a ping was sent.
        """
        interval = self.watchdog_interval()
        if interval is None:
            return False
        if self._next_kick is not None and now < self._next_kick:
            return False
        self._next_kick = now + interval / 2
        return self.watchdog()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    """STATUS= is one line: a newline would start a new (bogus) assignment."""
    return " ".join(str(text).split())
