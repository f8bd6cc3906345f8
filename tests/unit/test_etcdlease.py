"""EtcdLease over a fake etcd gateway: the transaction, the keep-alive and fencing by
time, endpoint rotation, authentication, and errors in words. The real etcd runs in
tests/integration/test_etcd_lease.py; here each rule is pinned without root."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from etcd3gw import exceptions as ex

from havip.errors import AdapterError
from havip.runtime.etcdclient import _why
from havip.runtime.etcdlease import EtcdLease, key_for

KEY = "/service/havip/51/leader"


class FakeEtcd:
    """One etcd cluster seen through several endpoints; `down` endpoints refuse."""

    def __init__(self):
        self.kv: dict[str, dict] = {}
        self.leases: dict[int, int] = {}
        self.next_id = 0x100
        self.down: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.users = {"havip": "goodpw"}
        self.lock = threading.Lock()

    def client(self, url: str):
        return _Client(self, url)

    def handle(self, url: str, path: str, body: dict, headers: dict) -> dict:
        with self.lock:
            self.calls.append((url, path))
            if url in self.down:
                raise ex.ConnectionFailedError("HTTPConnectionPool: Max retries exceeded (Caused by "
                                               "NewConnectionError('[Errno 111] Connection refused'))")
            if path == "auth/authenticate":
                if self.users.get(body["name"]) != body["password"]:
                    raise ex.Etcd3Exception(json.dumps({"error": "etcdserver: authentication failed, invalid "
                                                                 "user ID or password", "code": 3}))
                return {"token": "tok"}
            if path == "lease/grant":
                self.next_id += 1
                self.leases[self.next_id] = body["TTL"]
                return {"ID": str(self.next_id), "TTL": str(body["TTL"])}
            if path == "lease/keepalive":
                lid = int(body["ID"])
                return {"result": {"ID": body["ID"], **({"TTL": str(self.leases[lid])} if lid in self.leases else {})}}
            if path == "lease/revoke":
                lid = int(body["ID"])
                if lid not in self.leases:
                    raise ex.Etcd3Exception(json.dumps({"error": "etcdserver: requested lease not found"}))
                del self.leases[lid]
                self.kv = {k: v for k, v in self.kv.items() if int(v.get("lease", 0)) != lid}
                return {}
            kb = body["compare"][0]["key"] if path == "kv/txn" else body["key"]
            key = base64.b64decode(kb).decode()
            if path == "kv/range":
                return {"kvs": [self.kv[key]] if key in self.kv else []}
            if path == "kv/txn":
                if key not in self.kv:
                    put = body["success"][0]["request_put"]
                    self.kv[key] = {"key": kb, "value": put["value"], "lease": put.get("lease", "0"),
                                    "create_revision": "7", "mod_revision": "7"}
                    return {"succeeded": True, "header": {"revision": "7"}}
                return {"responses": [{"response_range": {"kvs": [self.kv[key]]}}]}
            raise AssertionError(path)

    def put(self, key: str, value: str, lease: int = 0) -> None:
        self.kv[key] = {"value": base64.b64encode(value.encode()).decode(), "lease": str(lease),
                        "create_revision": "3", "mod_revision": "3"}


class _Client:
    def __init__(self, etcd: FakeEtcd, url: str):
        self.etcd, self.url, self.timeout = etcd, url, None
        self.session = type("S", (), {"headers": {}, "close": lambda self: None})()

    def get_url(self, path: str) -> str:
        return path

    def post(self, path: str, json=None):
        return self.etcd.handle(self.url, path, json, self.session.headers)


EPS = ["http://e1:2379", "http://e2:2379", "http://e3:2379"]


def lease(etcd: FakeEtcd, holder: str = "h1/master", **kw) -> EtcdLease:
    kw = {"ttl": 2, "renew_interval": 0.1, "request_timeout": 0.2, "fence_margin": 0.6, **kw}
    return EtcdLease(EPS, KEY, holder, client_factory=etcd.client, **kw)


def test_key_for_is_shared_by_the_hosts_of_one_vrid():
    assert key_for("/service/havip/", 51) == KEY


def test_acquire_names_the_holder_keeps_alive_and_releases():
    etcd = FakeEtcd()
    a, b = lease(etcd), lease(etcd, "h2/backup")
    res = a.acquire()
    assert res.ok and res.reason == f"etcd leader key {KEY} taken (lease 101, ttl 2s, revision 7)"
    assert base64.b64decode(etcd.kv[KEY]["value"]).decode() == "h1/master"     # what etcdctl and vip-manager read
    other = b.acquire()
    assert not other.ok and other.holder == "h1/master"
    assert 101 not in etcd.leases or etcd.leases.get(102) is None                # b's unused lease was revoked
    time.sleep(0.5)
    assert a.renewals >= 3
    a.renew()
    v = a.view()
    assert (v["backend"], v["held_here"], v["holder"], v["lease_id"], v["state"]) == ("etcd", True, "h1/master",
                                                                                      "101", "held")
    assert 1.5 < v["ttl_left"] <= 2
    assert a.release() == f"etcd leader key {KEY} released (lease 101 revoked)"
    assert KEY not in etcd.kv and b.acquire().ok
    a.close()
    b.close()


def test_unanswered_keepalives_fence_before_the_ttl_can_run_out():
    etcd = FakeEtcd()
    lost: list[tuple[float, str]] = []
    a = lease(etcd, on_lost=lambda r, lease_id: lost.append((time.monotonic(), r)))
    assert a.acquire().ok
    time.sleep(0.3)
    etcd.down = set(EPS)
    cut = time.monotonic()
    deadline = cut + 3
    while not lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lost, "the lease was never reported lost"
    at, reason = lost[0]
    # The last answered keep-alive went out at most renew_interval before the cut:
    # the fence comes no later than ttl - fence_margin after it.
    assert at - cut <= 2 - 0.6 + 0.05, at - cut
    assert at - cut >= 2 - 0.6 - 0.1 - 0.2 - 0.05               # and not on the first failure
    assert reason.startswith(f"cannot prove the etcd lease of {KEY}: no keep-alive answered for")
    assert "connection refused" in reason and "it may expire in 0.6s" in reason
    with pytest.raises(AdapterError, match="cannot prove the etcd lease"):
        a.renew()
    assert a.view()["state"] == "lost"
    time.sleep(0.3)
    assert len(lost) == 1                                        # said once
    with pytest.raises(AdapterError, match="the key expires by itself within the ttl"):
        a.release()
    assert not a.held
    a.close()


def test_an_expired_lease_is_lost_at_once():
    etcd = FakeEtcd()
    lost = []
    a = lease(etcd, on_lost=lambda r, lease_id: lost.append(r))
    assert a.acquire().ok
    etcd.leases.clear()                                          # etcd expired or revoked it
    t0 = time.monotonic()
    while not lost and time.monotonic() < t0 + 1:
        time.sleep(0.01)
    assert lost == [f"etcd says the lease 101 of {KEY} has expired or was revoked"]
    a.close()


def test_a_lost_lease_is_never_reported_held_again():
    etcd = FakeEtcd()
    lost = []
    a = lease(etcd, on_lost=lambda r, lease_id: lost.append(r))
    assert a.acquire().ok
    etcd.leases.clear()
    etcd.kv.clear()
    t0 = time.monotonic()
    while not lost and time.monotonic() < t0 + 1:
        time.sleep(0.01)
    res = a.acquire()                                            # a fresh lease and key, not "already held"
    assert res.ok and "taken (lease" in res.reason and a.view()["state"] == "held"
    a.renew()
    a.close()


def test_a_dead_endpoint_is_skipped_and_the_next_remembered():
    etcd = FakeEtcd()
    etcd.down = {EPS[0]}
    a = lease(etcd)
    assert a.acquire().ok
    time.sleep(0.3)
    assert not a.view()["last_error"] and a.view()["endpoint"] == EPS[1]
    assert [u for u, p in etcd.calls if p == "lease/keepalive"].count(EPS[0]) <= 1
    a.close()


def test_unreachable_everywhere_names_every_endpoint():
    etcd = FakeEtcd()
    etcd.down = set(EPS)
    with pytest.raises(AdapterError) as err:
        lease(etcd).acquire()
    assert str(err.value) == ("etcd unreachable: " + "; ".join(f"{u}: connection refused" for u in EPS))


def test_authentication():
    etcd = FakeEtcd()
    with pytest.raises(AdapterError, match="^http://e1:2379: etcd refused user havip: authentication failed, "
                                           "invalid user ID or password$"):
        lease(etcd, user="havip", password="bad").acquire()
    good = lease(etcd, user="havip", password="goodpw")
    assert good.acquire().ok
    good.close()


def test_foreign_key_and_our_own_stale_key():
    etcd = FakeEtcd()
    etcd.put(KEY, "written-by-hand")
    a = lease(etcd)
    res = a.acquire()
    assert not res.ok and "holds 'written-by-hand' bound to no etcd lease: it never expires" in res.reason
    assert a.release() is None and KEY in etcd.kv
    etcd.kv.clear()
    etcd.leases[0x55] = 30
    etcd.put(KEY, "h1/master", lease=0x55)                       # our havip was killed holding it
    res = a.acquire()
    assert not res.ok and "this host's name: left by an earlier run" in res.reason
    assert a.release() == f"etcd leader key {KEY} released: left by this host's earlier run (lease 55)"
    assert KEY not in etcd.kv and 0x55 not in etcd.leases


@pytest.mark.parametrize("text, said", [
    ("HTTPSConnectionPool(host='a', port=2379): Max retries exceeded with url: /v3/lease/grant (Caused by "
     "SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "unable to get local issuer certificate (_ssl.c:992)')))",
     "TLS certificate verify failed (unable to get local issuer certificate): is the CA right?"),
    ("... SSLError(1, '[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:2580)')",
     "TLS: etcd rejected our client certificate (none given, or not signed by its CA: milvus.lease.cert, key)"),
    ("... (Caused by ConnectTimeoutError(<...>, 'Connection to 198.18.0.99 timed out. (connect timeout=0.5)'))",
     "timed out"),
    ("... NewConnectionError('<...>: Failed to establish a new connection: [Errno 113] No route to host'))",
     "no route to host"),
])
def test_transport_errors_in_words(text, said):
    assert _why(ex.ConnectionFailedError(text)) == said


def _with_executor(etcd: FakeEtcd):
    """An etcd lease wired to a daemon's Executor (fakes elsewhere): the lease, the
    executor, and the events it posts."""
    import structlog

    from havip.daemon.executor import Executor
    from tests.fakes import FakeAnnouncer, FakeVips
    from tests.unit.test_daemon import make

    a = lease(etcd)
    posted: list = []
    ex_ = Executor(make(milvus=True)[0].cfg, sock=None, vips=FakeVips(), announcer=FakeAnnouncer(), lease=a,
                   post=posted.append, log=structlog.get_logger("test"))
    return a, ex_, posted


def test_the_daemon_closes_a_held_etcd_lease_without_revoking_it():
    """Executor.close() gives nothing back (only the machine releases, after a confirmed
    stop); EtcdLease.close(), the daemon's last step, stops the keep-alive thread without
    revoking, so a lease whose stop was never confirmed is left to `havip cleanup` or its
    ttl, and no thread renews it after the daemon is gone. Its LeaseLost is wired to the loop."""
    etcd = FakeEtcd()
    a, ex_, posted = _with_executor(etcd)
    assert a.on_lost is not None
    assert a.acquire().ok
    thread = a._thread
    import structlog.testing

    with structlog.testing.capture_logs() as logs:
        ex_.close()
    assert a.held and thread.is_alive(), "the executor must not touch the lease"
    (kept,) = [e for e in logs if e["event"] == "lease_kept"]
    assert "until its ttl runs out or `havip cleanup`" in kept["consequence"]
    a.close()
    assert not thread.is_alive()
    kept = sum(1 for _, path in etcd.calls if path == "lease/keepalive")
    time.sleep(0.35)                                   # > 3 renew intervals
    assert sum(1 for _, path in etcd.calls if path == "lease/keepalive") == kept
    assert not any(path == "lease/revoke" for _, path in etcd.calls) and KEY in etcd.kv
    assert posted == []


def test_a_loss_names_its_lease_and_an_older_lease_s_loss_leaves_the_new_one_alone():
    """Issue 10: a late LeaseLost from an old etcd lease could fence a newer one. The loss
    carries the lease id; an older keep-alive's loss is reported (the machine drops it as
    stale) but does not mark the current lease lost."""
    etcd = FakeEtcd()
    lost: list[tuple[str, int]] = []
    a = lease(etcd, on_lost=lambda r, lease_id: lost.append((r, lease_id)))
    assert a.acquire().ok and a.lease_id == 0x101
    etcd.leases.clear()
    etcd.kv.clear()
    t0 = time.monotonic()
    while not lost and time.monotonic() < t0 + 1:
        time.sleep(0.01)
    assert lost == [(f"etcd says the lease 101 of {KEY} has expired or was revoked", 0x101)]
    assert a.acquire().ok and a.lease_id == 0x102
    a._lose(0x101, "a keep-alive thread of lease 101 that outlived it")
    assert lost[-1] == ("a keep-alive thread of lease 101 that outlived it", 0x101)
    a.renew()                                                    # lease 102 is not marked lost
    assert a.view()["state"] == "held"
    a.close()


def test_the_executor_passes_the_lease_id_to_the_machine():
    from havip.model import LeaseLost, LeaseResult

    etcd = FakeEtcd()
    a, ex_, posted = _with_executor(etcd)
    ex_._acquire_lease(op=7)
    (granted,) = posted
    assert isinstance(granted, LeaseResult) and granted.ok and (granted.op, granted.lease_id) == (7, 0x101)
    etcd.leases.clear()
    t0 = time.monotonic()
    while len(posted) < 2 and time.monotonic() < t0 + 1:
        time.sleep(0.01)
    assert isinstance(posted[1], LeaseLost) and posted[1].lease_id == 0x101
    ex_.close()
    a.close()
