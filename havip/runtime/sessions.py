"""Clear the sessions a stopped Milvus standalone server left in its embedded etcd.

Every Milvus component registers a session key under `ROOT/meta/session/` bound to an
etcd lease of `common.session.ttl`; the coordinators' keys (rootcoord, datacoord,
querycoord, indexcoord) are exclusive (written by CompareAndSwap only if absent). A
killed server leaves its keys behind, and its embedded etcd, started again by the next
server on the same data, restores their leases with their full TTL: until they expire
the new coordinators retry their CompareAndSwap, the new components dial the old
server's address and the coordinators reject the new node (`node not match`).

havip knows what Milvus cannot: the old server is stopped. It holds the storage lease
(no other Milvus runs on this storage) and started the new server itself. So, right
after that start, the sweep:

1. polls the session keys from the moment `docker start` returned (the embedded etcd
   answers once the new server's process runs); the ServerIDs present at the first
   answer are remembered;
2. Milvus 2.3.5 standalone gives all its components one ServerID (`getServerID
   reuse=true` in its log), allocated from a counter in etcd that only grows: the
   highest ServerID present, M, is our server's once our server registered, and every
   session below M is an earlier server's, which cannot be running. M is known to be
   ours when it appeared after the first answer, or when two servers' sessions were
   already there at the first answer (our server registers within milliseconds of its
   etcd answering, so the first answer often comes after it);
3. revokes the leases of the sessions below M. etcd deletes their keys; the new
   coordinators' next CompareAndSwap succeeds and the node checks see one node.

Refused (nothing revoked, one sentence why) when the lease is not held or when the etcd
does not look like one standalone server's (more than MAX_SERVERS ServerIDs; M without
several node kinds: in a Milvus cluster every node has a ServerID of its own), and
given up at the deadline (Milvus then waits for the leases to expire, as without the
sweep). The decision is `decide()`, a pure function; `SessionSweep.run` does the I/O
through `call(path, body, deadline=...)` (havip.runtime.etcdclient.Gateway's, etcd's
/v3 JSON gateway; a fake in the tests).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from havip.runtime.etcdclient import EtcdError, b64, unb64

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_ROOT = "by-dev"


def session_prefix(root: str) -> str:
    """Milvus' session directory: `etcd.rootPath` + `/meta/session/` (metaSubPath 'meta')."""
    return f"{root.strip('/')}/meta/session/"


def _range_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True, slots=True)
class Session:
    """One session key as etcd holds it."""

    key: str                     # relative to the session prefix: "rootcoord", "querynode-2"
    server_id: int
    address: str
    lease: str                   # etcd lease id as the gateway writes it (a decimal string); "0": none
    created: int                 # the key's create_revision


def parse_sessions(kvs: list[dict], prefix: str) -> list[Session]:
    """The session keys of a /v3/kv/range answer; other keys under the prefix (the
    ServerID counter `id`, anything without a ServerID) are not sessions."""
    out = []
    for kv in kvs:
        try:
            value = json.loads(unb64(kv.get("value")))
        except ValueError:
            continue
        if not isinstance(value, dict) or not isinstance(value.get("ServerID"), int):
            continue
        out.append(Session(key=unb64(kv.get("key")).removeprefix(prefix), server_id=value["ServerID"],
                           address=str(value.get("Address", "")), lease=str(kv.get("lease") or "0"),
                           created=int(kv.get("create_revision") or 0)))
    return out


MAX_SERVERS = 3       # ServerIDs in one standalone etcd after a takeover: ours, the old one's, a crash loop's


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `decide` concluded: wait (ours None), refuse, or revoke `stale`."""

    ours: int | None
    stale: tuple[Session, ...] = ()
    refused: str | None = None


def node_kinds(sessions: list[Session], server_id: int) -> set[str]:
    """The node kinds (querynode, datanode, indexnode, proxy) registered under one ServerID."""
    return {s.key.split("-", 1)[0] for s in sessions if s.server_id == server_id and "-" in s.key}


def decide(first: frozenset[int], sessions: list[Session]) -> Verdict:
    """Pure: our server's ServerID and the stale sessions, given the ServerIDs seen at
    first contact (`first`) and the sessions now.

    Milvus allocates ServerIDs from a counter that only grows, once per server, so the
    highest ServerID present, M, is our server's as soon as our server registered a
    session: every session below M is an earlier server's, and no earlier server runs
    (the storage lease). M is known to be ours when it was not there at first contact
    (it appeared: only our server writes here), or when two servers' sessions were
    there at first contact (our contact came after our server registered). One server's
    sessions alone at first contact may be the old server's: wait for a newer one.
    M must carry a standalone server's signature (several node kinds under one ServerID;
    in a Milvus cluster every node has a ServerID of its own), and at most MAX_SERVERS
    servers' sessions may be there: otherwise this is no standalone server's etcd."""
    if not sessions:
        return Verdict(None)
    ids = sorted({s.server_id for s in sessions})
    if len(ids) > MAX_SERVERS:
        return Verdict(None, refused=f"sessions of {len(ids)} ServerIDs ({ids[:6]}) are in this etcd: not one "
                                     f"standalone server's leftovers (a Milvus cluster?); nothing revoked")
    ours = ids[-1]
    if ours in first and len(first) < 2:
        return Verdict(None)
    if len(node_kinds(sessions, ours)) < 2:
        return Verdict(None)         # not all of our server's nodes registered yet (or not standalone)
    return Verdict(ours, stale=tuple(s for s in sessions if s.server_id < ours))


@dataclass(frozen=True, slots=True)
class SweepResult:
    ok: bool
    reason: str                  # one sentence
    outcome: str                 # cleared | none_stale | refused | gave_up | failed (the metric's label)
    revoked: list[str] = field(default_factory=list)    # the keys whose leases were revoked
    ours: int | None = None


class SessionSweep:
    """One sweep after our server's start; `run` blocks up to `timeout` seconds."""

    def __init__(self, call: Callable[..., dict], *, root: str = DEFAULT_ROOT, timeout: float = 30.0,
                 poll: float = 0.1, endpoint: str = DEFAULT_ENDPOINT, log=None, metrics=None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.call = call
        self.prefix = session_prefix(root)
        self.timeout, self.poll = timeout, poll
        self.endpoint = endpoint
        self.log = log
        self.metrics = metrics
        self.clock, self.sleep = clock, sleep

    def start(self, lease_held: Callable[[], bool], name: str = "session-sweep") -> threading.Thread:
        """`run` in a thread of its own (daemon: it ends by its deadline anyway)."""
        t = threading.Thread(target=self.run, args=(lease_held,), name=name, daemon=True)
        t.start()
        return t

    def run(self, lease_held: Callable[[], bool], cancel: threading.Event | None = None) -> SweepResult:
        """The sweep; never raises. Every decision is logged as one sentence and counted."""
        try:
            res = self._run(lease_held, cancel)
        except Exception as exc:  # noqa: BLE001 - a bug here must not take the worker down
            res = SweepResult(False, f"the session sweep failed unexpectedly: {exc!r}; Milvus waits for the "
                                     f"old sessions to expire", "failed")
        self._report(res)
        return res

    def _run(self, lease_held: Callable[[], bool], cancel: threading.Event | None) -> SweepResult:
        if not lease_held():
            return SweepResult(False, "stale Milvus sessions not cleared: this host does not hold the storage "
                                      "lease, so it cannot know that the old server stopped", "refused")
        t0 = self.clock()
        deadline = t0 + self.timeout
        first: frozenset[int] | None = None
        last = "etcd was not asked"
        while True:
            if cancel is not None and cancel.is_set():
                return SweepResult(False, "stale Milvus sessions not cleared: the start was cancelled", "gave_up")
            if self.clock() >= deadline:
                return self._gave_up(first, last)
            try:
                sessions = self._list(deadline)
            except EtcdError as exc:
                last = f"etcd at {self.endpoint} did not answer: {exc}"
            else:
                if first is None:
                    first = frozenset(s.server_id for s in sessions)
                    self._say("session_sweep_contact", took=round(self.clock() - t0, 3), sessions=len(sessions),
                              server_ids=sorted(first))
                verdict = decide(first, sessions)
                if verdict.refused:
                    return SweepResult(False, verdict.refused, "refused")
                if verdict.ours is not None:
                    return self._revoke(verdict, lease_held, deadline)
                last = (f"the sessions in etcd are those of ServerID {sorted(first)} seen at first contact, "
                        f"no newer server's" if sessions else "no sessions in etcd yet")
            self.sleep(max(0.0, min(self.poll, deadline - self.clock())))

    def _gave_up(self, first, last: str) -> SweepResult:
        what = "etcd never answered" if first is None else "our server's sessions could not be told apart"
        return SweepResult(False, f"stale Milvus sessions not cleared: {what} within {self.timeout:g}s ({last}); "
                                  f"Milvus waits for them to expire", "gave_up")

    def _list(self, deadline: float) -> list[Session]:
        out = self.call("kv/range", {"key": b64(self.prefix), "range_end": b64(_range_end(self.prefix))},
                        deadline=deadline)
        return parse_sessions(out.get("kvs") or [], self.prefix)

    def _revoke(self, verdict: Verdict, lease_held: Callable[[], bool], deadline: float) -> SweepResult:
        if not verdict.stale:
            return SweepResult(True, f"no stale Milvus sessions: our server (ServerID {verdict.ours}) found none "
                                     f"left by an earlier one", "none_stale", ours=verdict.ours)
        # The single-writer guarantee is what makes these sessions stale: asserted again
        # right before the one irreversible step.
        if not lease_held():
            return SweepResult(False, "stale Milvus sessions not cleared: the storage lease was lost during "
                                      "the sweep", "refused", ours=verdict.ours)
        leases: dict[str, list[str]] = {}
        for s in verdict.stale:
            leases.setdefault(s.lease, []).append(s.key)
        revoked, failed = [], []
        for lease, keys in sorted(leases.items()):
            try:
                if lease == "0":     # a key without a lease would never expire: delete it
                    for k in keys:
                        self.call("kv/deleterange", {"key": b64(self.prefix + k)}, deadline=deadline)
                else:
                    self.call("lease/revoke", {"ID": lease}, deadline=deadline)
                revoked.extend(keys)
            except EtcdError as exc:
                if "not found" in str(exc):      # expired meanwhile: gone all the same
                    revoked.extend(keys)
                else:
                    failed.append(f"{','.join(keys)}: {exc}")
        ids = sorted({s.server_id for s in verdict.stale})
        said = (f"revoked the leases of {len(revoked)} stale Milvus session(s) of ServerID {ids} "
                f"({', '.join(sorted(revoked))}); our server is ServerID {verdict.ours}")
        if failed:
            return SweepResult(False, said + f"; not revoked: {'; '.join(failed)}", "failed", revoked, verdict.ours)
        return SweepResult(True, said, "cleared", sorted(revoked), verdict.ours)

    def _say(self, event: str, level: str = "info", **kw) -> None:
        if self.log is not None:
            try:
                getattr(self.log, level)(event, **kw)
            except Exception:  # noqa: BLE001 - logging must not end the sweep
                pass

    def _report(self, res: SweepResult) -> None:
        level = "info" if res.outcome in ("cleared", "none_stale") else "warning"
        self._say("session_sweep", level, outcome=res.outcome, reason=res.reason, revoked=len(res.revoked))
        if self.metrics is not None:
            try:
                self.metrics.session_sweep(res.outcome, len(res.revoked))
            except Exception:  # noqa: BLE001
                pass


class StaleSessionClearer:
    """Called by the container runtime after each start of our container: one sweep in a
    thread of its own, through a fresh etcd gateway client, bounded by `timeout`."""

    def __init__(self, endpoint: str, root: str, timeout: float, lease_held: Callable[[], bool], *,
                 log=None, metrics=None, request_timeout: float = 0.5):
        self.endpoint, self.root, self.timeout = endpoint, root, timeout
        self.lease_held = lease_held
        self.log, self.metrics = log, metrics
        self.request_timeout = request_timeout
        self.last: SweepResult | None = None

    def __call__(self) -> threading.Thread:
        t = threading.Thread(target=self._sweep, name="session-sweep", daemon=True)
        t.start()
        return t

    def _sweep(self) -> None:
        from havip.runtime.etcdclient import Gateway

        gw = None
        try:
            gw = Gateway([self.endpoint], timeout=self.request_timeout)
            sweep = SessionSweep(gw.call, root=self.root, timeout=self.timeout, endpoint=self.endpoint,
                                 log=self.log, metrics=self.metrics)
            self.last = sweep.run(self.lease_held)
        except Exception as exc:  # noqa: BLE001 - a thread's exception would only reach stderr
            if self.log is not None:
                self.log.error("session_sweep", outcome="failed", reason=f"the session sweep could not run: {exc!r}")
        finally:
            if gw is not None:
                gw.close()
