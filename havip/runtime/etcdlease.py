"""The storage lease on etcd: a leader key with a TTL, as Patroni's.

The file lease (havip.runtime.lease) is only as good as the file system's lock manager,
and it has no TTL: a holder cut off from the storage cannot know when it must stop.
This backend keeps the same contract (acquire, renew, release, view, status, held) on
an etcd cluster, which Milvus already depends on:

- The key `PREFIX/VRID/leader` is created in one transaction that succeeds only if it
  does not exist (create_revision == 0), bound to an etcd lease of `ttl` seconds. Its
  value is the holder's name (HOSTNAME/INSTANCE), so `etcdctl get` shows who runs
  Milvus, as Patroni's leader key shows who runs PostgreSQL.
- Our own thread keeps the lease alive every `renew_interval`, each call bounded by
  `request_timeout`, trying the next endpoint on failure. It never runs on the advert
  loop.
- Fencing by time. A keep-alive sent at s and answered proves the key lives until at
  least s + ttl (etcd counts the TTL from when it handles the request, later than s).
  When no keep-alive has been answered by s + ttl - fence_margin, the lease can no
  longer be proven: `on_lost` tells the daemon, which removes the VIP and kills Milvus
  in the fence_margin that is left, before etcd can give the key to another host.
  `renew()` (the master's `lease` check) fails from then on too.
- `release()` revokes our etcd lease, which deletes the key: only after a confirmed
  stop (the machine decides). A key this host left behind when it was killed (same
  holder name) is revoked too, by start-up or `havip cleanup`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from havip.errors import AdapterError
from havip.runtime.etcdclient import EtcdError, Gateway, b64, unb64
from havip.runtime.lease import LeaseResult

RETRY_PAUSE = 0.1       # seconds between keep-alive attempts after a failure (next endpoint)


def key_for(prefix: str, vrid: int) -> str:
    """The leader key of one VRRP instance: both hosts of a VRID share it."""
    return f"{prefix.rstrip('/')}/{vrid}/leader"


class EtcdLease:
    """The leader key `key` on the etcd cluster at `endpoints`, taken as `holder`."""

    backend = "etcd"

    def __init__(self, endpoints: list[str], key: str, holder: str, *, ttl: int = 10, renew_interval: float = 2.5,
                 request_timeout: float = 1.0, fence_margin: float = 3.0, ca: str | None = None,
                 cert: str | None = None, key_file: str | None = None, user: str | None = None,
                 password: str | None = None, clock: Callable[[], float] = time.monotonic, client_factory=None,
                 on_lost: Callable[[str, int], None] | None = None):
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.renew_interval = renew_interval
        self.request_timeout = request_timeout
        self.fence_margin = fence_margin
        self.clock = clock
        self.on_lost = on_lost
        opts = dict(timeout=request_timeout, ca=ca, cert=cert, key=key_file, user=user, password=password,
                    clock=clock, client_factory=client_factory)
        self._gw = Gateway(endpoints, **opts)          # acquire, release, status: under _lock
        self._ka_gw = Gateway(endpoints, **opts)       # the keep-alive thread's own
        self._lock = threading.Lock()
        self._lease_id: int | None = None
        self._proven_until = 0.0                       # monotonic: the key lives at least until then
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict | None = None                 # the key as last read or written here
        self.renewals = 0

    @property
    def path(self) -> str:
        """The key, where the file lease has its path (logs, the `lease` check)."""
        return self.key

    @property
    def held(self) -> bool:
        return self._lease_id is not None

    @property
    def lease_id(self) -> int | None:
        """The etcd lease our key is bound to, None when not held. `on_lost` names the lease
        it is about, so that a late loss of an older lease is told apart."""
        return self._lease_id

    # ---------------------------------------------------------------- acquire

    def _deadline(self) -> float:
        return self.clock() + self.request_timeout * max(1, len(self._gw.endpoints))

    def acquire(self) -> LeaseResult:
        """Take the key without waiting; say who has it when we cannot."""
        with self._lock:
            if self._lease_id is not None and self._lost is None:
                return LeaseResult(True, f"etcd leader key {self.key} already held (lease {self._lease_id:x})")
            if self._lease_id is not None:
                # Lost and not yet released: that lease proves nothing any more. Start over.
                self._stop_keepalive()
                stale, self._lease_id = self._lease_id, None
                self._revoke_quietly(stale)
            sent = self.clock()
            grant = self._gw.call("lease/grant", {"TTL": self.ttl}, deadline=self._deadline())
            lease_id, ttl = int(grant.get("ID") or 0), int(grant.get("TTL") or 0)
            if not lease_id or ttl <= 0:
                raise AdapterError(f"etcd granted no lease for {self.key}: {grant.get('error') or grant}")
            kb = b64(self.key)
            txn = {"compare": [{"key": kb, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
                   "success": [{"request_put": {"key": kb, "value": b64(self.holder), "lease": str(lease_id)}}],
                   "failure": [{"request_range": {"key": kb}}]}
            try:
                out = self._gw.call("kv/txn", txn, deadline=self._deadline())
            except AdapterError:
                self._revoke_quietly(lease_id)
                raise
            if not out.get("succeeded"):
                self._revoke_quietly(lease_id)
                return self._refused(out)
            self._lease_id, self._lost = lease_id, None
            self._proven_until = sent + ttl
            rev = int((out.get("header") or {}).get("revision") or 0)
            self._seen = {"holder": self.holder, "lease_id": lease_id, "epoch": rev}
            self._start_keepalive(lease_id)
            return LeaseResult(True, f"etcd leader key {self.key} taken (lease {lease_id:x}, ttl {ttl}s, "
                                     f"revision {rev})")

    def _refused(self, out: dict) -> LeaseResult:
        kvs = []
        for r in out.get("responses") or []:
            kvs += (r.get("response_range") or {}).get("kvs") or []
        if not kvs:   # deleted between compare and range: say so, the next attempt may win
            return LeaseResult(False, f"etcd leader key {self.key} was taken meanwhile", holder="(unknown)")
        kv = kvs[0]
        who = unb64(kv.get("value"))[:128] or "(empty value)"
        lease = int(kv.get("lease") or 0)
        self._seen = {"holder": who, "lease_id": lease, "epoch": int(kv.get("create_revision") or 0)}
        if not lease:
            return LeaseResult(False, f"etcd leader key {self.key} holds {who!r} bound to no etcd lease: it never "
                                      "expires; not written by havip? Remove it with `etcdctl del "
                                      f"{self.key}` once you know nobody uses it", holder=who)
        mine = " (this host's name: left by an earlier run; it expires within the ttl)" if who == self.holder else ""
        return LeaseResult(False, f"etcd leader key {self.key} is held by {who}{mine}, whose Milvus may be writing "
                                  "the shared storage", holder=who)

    def _revoke_quietly(self, lease_id: int) -> None:
        try:
            self._gw.call("lease/revoke", {"ID": str(lease_id)}, deadline=self.clock() + self.request_timeout)
        except AdapterError:
            pass      # it expires after the ttl; it holds no key

    # ---------------------------------------------------------------- keep-alive (own thread)

    def _start_keepalive(self, lease_id: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keepalive, args=(lease_id, self._stop),
                                        name="etcd-keepalive", daemon=True)
        self._thread.start()

    def _keepalive(self, lease_id: int, stop: threading.Event) -> None:
        last_ok = self.clock()
        error = "no keep-alive answered yet"
        next_at = last_ok + self.renew_interval
        while not stop.is_set():
            fence_at = self._proven_until - self.fence_margin
            now = self.clock()
            if now >= fence_at:
                self._lose(lease_id, f"cannot prove the etcd lease of {self.key}: no keep-alive answered for "
                                     f"{now - last_ok:.1f}s ({error}); it may expire in "
                                     f"{self._proven_until - now:.1f}s")
                return
            if stop.wait(max(0.0, min(next_at, fence_at) - now)):
                return
            if self.clock() >= fence_at:
                continue
            sent = self.clock()
            try:
                out = self._ka_gw.call("lease/keepalive", {"ID": str(lease_id)},
                                       deadline=min(sent + self.request_timeout, fence_at))
                ttl = int((out.get("result") or {}).get("TTL") or 0)
            except AdapterError as exc:
                error, next_at = str(exc), self.clock() + RETRY_PAUSE
                continue
            if stop.is_set():
                return
            if ttl <= 0:
                self._lose(lease_id, f"etcd says the lease {lease_id:x} of {self.key} has expired or was revoked")
                return
            self._proven_until = max(self._proven_until, sent + ttl)
            self.renewals += 1
            last_ok, next_at = sent, sent + self.renew_interval

    def _lose(self, lease_id: int, reason: str) -> None:
        """Report the loss of `lease_id`. A keep-alive thread that outlived its lease (not
        joined in time when a new one was taken) reports it too, named, but does not mark
        the current lease lost; the machine drops it as stale."""
        if lease_id == self._lease_id:     # one read: acquire() may be replacing it (not locked:
            # it holds _lock while it joins this thread)
            if self._lost is not None:
                return
            self._lost = reason
        if self.on_lost is not None:
            self.on_lost(reason, lease_id)

    def _stop_keepalive(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(self.request_timeout + 1)

    def renew(self) -> None:
        """The master's `lease` check: no I/O (the keep-alive thread does it); raises
        AdapterError when the lease can no longer be proven."""
        if self._lease_id is None:
            raise AdapterError(f"the etcd leader key {self.key} is not held by this host")
        if self._lost is not None:
            raise AdapterError(self._lost)
        left = self._proven_until - self.clock()
        if left < self.fence_margin:
            raise AdapterError(f"cannot prove the etcd lease of {self.key}: {max(0.0, left):.1f}s left")

    # ---------------------------------------------------------------- release

    def release(self) -> str | None:
        """After the container is confirmed stopped: revoke our etcd lease (the key goes
        with it). Also revokes a key this host left behind before it was killed."""
        with self._lock:
            self._stop_keepalive()
            lease_id, self._lease_id = self._lease_id, None
            deadline = self._deadline()
            if lease_id is not None:
                try:
                    self._gw.call("lease/revoke", {"ID": str(lease_id)}, deadline=deadline)
                except EtcdError as exc:
                    if "not found" in str(exc):
                        return f"etcd leader key {self.key}: lease {lease_id:x} had already expired"
                    raise AdapterError(f"cannot revoke the etcd lease {lease_id:x} of {self.key}: {exc}; "
                                       "the key expires by itself within the ttl") from None
                self._seen = None
                return f"etcd leader key {self.key} released (lease {lease_id:x} revoked)"
            kv = self._get(deadline)
            if kv is None or unb64(kv.get("value")) != self.holder:
                return None
            stale = int(kv.get("lease") or 0)
            if stale:
                self._gw.call("lease/revoke", {"ID": str(stale)}, deadline=deadline)
            else:
                kb = b64(self.key)
                self._gw.call("kv/txn", {"compare": [{"key": kb, "result": "EQUAL", "target": "MOD",
                                                      "mod_revision": kv.get("mod_revision")}],
                                         "success": [{"request_delete_range": {"key": kb}}]}, deadline=deadline)
            self._seen = None
            return f"etcd leader key {self.key} released: left by this host's earlier run (lease {stale:x})"

    def _get(self, deadline: float) -> dict | None:
        out = self._gw.call("kv/range", {"key": b64(self.key)}, deadline=deadline)
        kvs = out.get("kvs") or []
        return kvs[0] if kvs else None

    def close(self) -> None:
        """Stop the keep-alive without revoking (the daemon's machine decides releases)."""
        self._stop_keepalive()
        self._gw.close()
        self._ka_gw.close()

    # ---------------------------------------------------------------- status

    def view(self) -> dict:
        """What this host knows, without I/O (the daemon's loop reports it)."""
        seen = self._seen
        held = self._lease_id is not None
        return {"backend": "etcd", "path": self.key, "key": self.key, "held_here": held, "known": seen is not None,
                "holder": (seen or {}).get("holder"), "state": ("lost" if self._lost else "held") if held else None,
                "epoch": (seen or {}).get("epoch"),
                "lease_id": f"{seen['lease_id']:x}" if seen and seen.get("lease_id") else None,
                "ttl_left": round(max(0.0, self._proven_until - self.clock()), 2) if held else None,
                "renewals": self.renewals, "endpoint": self._ka_gw.endpoint if held else self._gw.endpoint,
                "last_error": self._lost or self._ka_gw.last_error or self._gw.last_error}

    def status(self) -> dict:
        """What etcd says now: the key's holder and its lease's TTL. Waits on etcd: never
        on the daemon's loop."""
        with self._lock:
            try:
                deadline = self._deadline()
                kv = self._get(deadline)
                if kv is None:
                    self._seen = {}
                    return {**self.view(), "holder": None, "state": "free"}
                lease = int(kv.get("lease") or 0)
                ttl = None
                if lease:
                    ttl = int(self._gw.call("kv/lease/timetolive", {"ID": str(lease)}, deadline=deadline).get("TTL", -1))
                self._seen = {"holder": unb64(kv.get("value")), "lease_id": lease,
                              "epoch": int(kv.get("create_revision") or 0)}
                return {**self.view(), "state": "held", "server_ttl": ttl}
            except AdapterError as exc:
                return {**self.view(), "error": str(exc)}
