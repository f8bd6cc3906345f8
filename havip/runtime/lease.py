"""The storage lease: one Milvus writer on the shared storage, even in a split brain.

VRRP elects one master only while the hosts hear each other. When they stop hearing
each other but both still reach the shared storage (a switch that drops multicast, a
firewall rule, a VLAN mistake), both become VRRP masters and, without a second guard,
both would start Milvus on the same files. The lease is that guard, and it lives where
the danger is: on the shared storage itself.

It is an exclusive `flock` on a file in the shared directory, taken before the VIP and
the container and released only after the container is confirmed stopped. On NFS
(Linux emulates flock with a whole-file POSIX lock, which NFSv3's NLM and NFSv4 keep on
the server) and on SMB (byte-range locks, unless mounted `nobrl`) the server arbitrates;
on one machine (the lab) the kernel does.

A lock dies with its process, but a Milvus container does not die with havip: after a
SIGKILL the container runs on until `havip cleanup` stops it. So the file also holds a
record: who holds the lease and whether it released it cleanly. A host that gets the lock
but finds the record still `held` by another host knows that host's Milvus may still be
running, and waits for its cleanup (which marks the record `released` after stopping the
container) up to `orphan_timeout` before it takes over.

The record is one JSON object, rewritten in place under the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from havip.errors import AdapterError


@dataclass(frozen=True, slots=True)
class LeaseResult:
    ok: bool
    reason: str
    holder: str | None = None     # who holds it, when we could not get it


def _describe(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


class StorageLease:
    """The lease file at `path`, taken as `holder` (unique per host)."""

    def __init__(self, path: str, holder: str, *, orphan_timeout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.path = path
        self.holder = holder
        self.orphan_timeout = orphan_timeout
        self.clock = clock
        self.wall = wall
        self._fd: int | None = None
        self._record: dict = {}
        self._seen: dict | None = None   # the record as last read or written here (for view())
        self._orphan: tuple[tuple, float] | None = None   # (the orphan record's identity, first seen)
        self._lock = threading.Lock()    # the container worker, the checks and status share us

    @property
    def held(self) -> bool:
        return self._fd is not None

    # ---------------------------------------------------------------- file helpers

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise AdapterError(f"cannot open the storage lease {self.path}: {_describe(exc)}") from None

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = os.pread(fd, 4096, 0)
        except OSError:
            return {}
        try:
            rec = json.loads(data.decode() or "{}")
        except (UnicodeDecodeError, ValueError):
            return {}
        return rec if isinstance(rec, dict) else {}

    def _write(self, fd: int, rec: dict) -> None:
        data = (json.dumps(rec, sort_keys=True) + "\n").encode()
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        except OSError as exc:
            raise AdapterError(f"cannot write the storage lease {self.path}: {_describe(exc)}") from None

    def _try_lock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise AdapterError(f"cannot lock the storage lease {self.path}: {_describe(exc)}") from None

    @staticmethod
    def _close(fd: int) -> None:
        try:
            os.close(fd)      # closing the only descriptor drops the flock
        except OSError:
            pass

    def _who(self, rec: dict) -> str:
        return str(rec.get("holder") or "an unknown host")

    # ---------------------------------------------------------------- API

    def acquire(self) -> LeaseResult:
        """Take the lease without waiting; say who has it when we cannot."""
        with self._lock:
            if self._fd is not None:
                return LeaseResult(True, f"storage lease {self.path} already held")
            fd = self._open()
            if not self._try_lock(fd):
                rec = self._seen = self._read(fd)
                self._close(fd)
                who = self._who(rec)
                return LeaseResult(False, f"the storage lease {self.path} is held by {who}, whose Milvus may "
                                          "be writing the shared storage", holder=who)
            rec = self._seen = self._read(fd)
            if rec.get("state") == "held" and rec.get("holder") not in (None, self.holder):
                ident = (rec.get("holder"), rec.get("epoch"))
                now = self.clock()
                if self._orphan is None or self._orphan[0] != ident:
                    self._orphan = (ident, now)
                waited = now - self._orphan[1]
                who = self._who(rec)
                if waited < self.orphan_timeout:
                    self._close(fd)
                    return LeaseResult(False, f"{who} holds the storage lease {self.path} but its havip is gone "
                                              f"without releasing it: its Milvus may still run until `havip "
                                              f"cleanup` stops it there; waiting up to {self.orphan_timeout:.0f}s "
                                              f"({waited:.1f}s so far)", holder=who)
                taken_from = f"; taken from {who}, which never released it ({waited:.0f}s)"
            else:
                taken_from = ""
            self._orphan = None
            new = {"holder": self.holder, "state": "held", "epoch": int(rec.get("epoch") or 0) + 1,
                   "pid": os.getpid(), "acquired_at": round(self.wall(), 3), "renewed_at": round(self.wall(), 3)}
            try:
                self._write(fd, new)
            except AdapterError:
                self._close(fd)
                raise
            self._fd, self._record = fd, new
            self._seen = new
            return LeaseResult(True, f"storage lease {self.path} acquired (epoch {new['epoch']}){taken_from}")

    def renew(self) -> None:
        """Prove the lease still works: rewrite the record. Raises AdapterError if the
        storage no longer takes our writes (an NFS client that lost its lock gets EIO)."""
        with self._lock:
            if self._fd is None:
                raise AdapterError(f"the storage lease {self.path} is not held by this host")
            rec = {**self._record, "renewed_at": round(self.wall(), 3)}
            self._write(self._fd, rec)
            self._record = self._seen = rec

    def release(self) -> str | None:
        """After the container is confirmed stopped: mark the record released and unlock.

        Also clears a record this host left `held` before it was killed (start-up,
        `havip cleanup`), if nobody else has taken the lease since."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                fd = self._open()
                if not self._try_lock(fd):
                    self._close(fd)
                    return None       # another host has it: nothing of ours to release
            try:
                rec = self._seen = self._read(fd)
                if rec.get("holder") != self.holder or rec.get("state") != "held":
                    return None
                self._seen = {**rec, "state": "released", "released_at": round(self.wall(), 3)}
                self._write(fd, self._seen)
                return f"storage lease {self.path} released (epoch {rec.get('epoch')})"
            finally:
                self._close(fd)

    def view(self) -> dict:
        """The record as this host last read or wrote it: no I/O, so the daemon's loop can
        report it without waiting on a storage that may hang. `known` is False until this
        host first touched the lease."""
        rec = self._seen
        return {"path": self.path, "held_here": self.held, "known": rec is not None,
                **{k: (rec or {}).get(k) for k in ("holder", "state", "epoch", "renewed_at")}}

    def status(self) -> dict:
        """What the file says now, read without the lock. It waits on the storage: never
        on the daemon's loop (that reports view())."""
        try:
            with open(self.path, "rb") as f:
                rec = json.loads(f.read(4096).decode() or "{}")
        except FileNotFoundError:
            rec = {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return {"path": self.path, "held_here": self.held, "error": str(exc)}
        rec = self._seen = rec if isinstance(rec, dict) else {}
        return {"path": self.path, "held_here": self.held, "holder": rec.get("holder"),
                "state": rec.get("state"), "epoch": rec.get("epoch"),
                "renewed_at": rec.get("renewed_at")}


def holder_for(cfg) -> str:
    """This host's name in the lease record: `milvus.lease.holder`, else HOSTNAME/INSTANCE."""
    import socket

    return cfg.milvus.lease.holder or f"{socket.gethostname()}/{cfg.instance}"


def _unescape(field: str) -> str:
    """/proc/self/mounts escapes space, tab, newline and backslash as octal."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_warning(path: str, mounts: str | None = None) -> str | None:
    """A sentence if the file system under `path` keeps locks on this host only, so that
    the lease could not see the other host's lock; None when it looks fine or unknown."""
    if mounts is None:
        try:
            with open("/proc/self/mounts") as f:
                mounts = f.read()
        except OSError:
            return None
    best: tuple[str, str, set[str]] | None = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        point, fstype, opts = _unescape(parts[1]), parts[2], set(parts[3].split(","))
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            best = (point, fstype, opts)
    if best is None:
        return None
    point, fstype, opts = best
    local = sorted(o for o in opts if o in ("nolock", "local_lock=flock", "local_lock=all", "nobrl"))
    if local and (fstype.startswith("nfs") or fstype in ("cifs", "smb3")):
        return (f"the storage lease {path} is on {fstype} mounted at {point} with {', '.join(local)}: locks "
                "stay on this host, so the lease cannot see the other host's; remount without it")
    return None
