"""The etcd lease against a real three-member etcd cluster (Debian's etcd-server) in
network namespaces: the key taken, kept and released; one member lost changes nothing;
the quorum lost fences the holder in time; bad input gives clear errors."""

from __future__ import annotations

import re
import time

import pytest

from havip.lab.netns import wait_for
from tests.conftest import require_binary, require_root
from tests.integration.nsagent import Agent

KEY = "/service/havip/51/leader"
TTL, RENEW, REQ, MARGIN = 5, 0.5, 0.5, 1.5      # renew + request + margin < ttl (2.5 < 5)


@pytest.fixture
def etcd(topology, tmp_path):
    require_root()
    require_binary("etcd")
    require_binary("etcdctl")
    from havip.lab.etcd import EtcdCluster

    hosts = [topology.add_host(n, i, ipv6=False) for n, i in (("h1", 11), ("h2", 21), ("w", 31))]
    cluster = EtcdCluster(hosts, tmp_path / "etcd")
    topology.on_close(cluster.close)
    cluster.start()
    agents: list[Agent] = []

    def agent(host) -> Agent:
        a = Agent(host)
        agents.append(a)
        return a
    yield cluster, hosts, agent
    for a in agents:
        a.close()


def new_lease(agent: Agent, name: str, endpoints, holder: str, **kw) -> None:
    agent.new(name, "EtcdLease", endpoints, KEY, holder, ttl=kw.pop("ttl", TTL), renew_interval=RENEW,
              request_timeout=REQ, fence_margin=MARGIN, **kw)


def test_key_taken_kept_and_released(etcd):
    cluster, (h1, h2, w), agent = etcd
    a1, a2 = agent(h1), agent(h2)
    new_lease(a1, "l", cluster.endpoints, "h1/havip")
    new_lease(a2, "l", cluster.endpoints, "h2/havip")
    res = a1.call("l", "acquire")
    assert res["ok"] and "taken" in res["reason"], res
    got = cluster.get(KEY)
    assert got["value"] == "h1/havip" and got["lease"] != "0"       # etcdctl sees the holder by name
    other = a2.call("l", "acquire")
    assert not other["ok"] and other["holder"] == "h1/havip"
    assert "is held by h1/havip" in other["reason"]
    # Kept alive past twice its TTL.
    time.sleep(2 * TTL)
    assert cluster.get(KEY)["value"] == "h1/havip"
    a1.call("l", "renew")                                            # the master's check passes
    view = a1.call("l", "view")
    assert view["held_here"] and view["renewals"] >= 8 and view["ttl_left"] > MARGIN
    assert view["lease_id"] == got["lease"]
    said = a1.call("l", "release")
    assert said.startswith(f"etcd leader key {KEY} released (lease {got['lease']} revoked)")
    assert cluster.get(KEY) is None                                  # revoked: the key is gone at once
    assert a2.call("l", "acquire")["ok"]
    assert a1.call("l", "lost") == [] and a2.call("l", "lost") == []


def test_one_member_lost_changes_nothing_two_lost_fences_in_time(etcd):
    cluster, (h1, h2, w), agent = etcd
    a1 = agent(h1)
    new_lease(a1, "l", cluster.endpoints, "h1/havip")
    assert a1.call("l", "acquire")["ok"]
    # Kill the member the lease talks to first: it must move to another one.
    cluster.kill(cluster.member("h1"))
    time.sleep(TTL + 1)
    assert a1.call("l", "lost") == []
    a1.call("l", "renew")
    assert cluster.get(KEY)["value"] == "h1/havip"
    # Two of three gone: no keep-alive can be answered (a minority leader may still
    # answer for about an election timeout: etcd renews leases on the leader alone).
    killed = time.monotonic()
    cluster.kill(cluster.member("h2"))
    lost = wait_for(lambda: a1.call("l", "lost"), TTL + 3, interval=0.1, what="the lease to be lost")
    # Fenced with fence_margin left before the earliest expiry, which is counted from the
    # last keep-alive etcd answered; and within a ttl and an election of the kill.
    left = float(re.search(r"it may expire in ([0-9.]+)s", lost[0]["reason"])[1])
    assert left >= MARGIN - 0.1, lost
    assert lost[0]["at"] - killed <= TTL - MARGIN + 2.0, lost
    assert "cannot prove the etcd lease" in lost[0]["reason"]
    with pytest.raises(Exception, match="cannot prove the etcd lease"):
        a1.call("l", "renew")
    # The quorum comes back: the key expired meanwhile (or is revoked by the release),
    # and the lease can be taken again.
    cluster.start_member(cluster.member("h2"))
    cluster.start_member(cluster.member("h1"))
    try:
        a1.call("l", "release")
    except Exception:  # noqa: BLE001 - revoking may fail: the lease had expired
        pass
    wait_for(lambda: a1.call("l", "acquire")["ok"], 15, interval=0.3, what="the key taken again after quorum")


def test_unreachable_endpoints_say_so(etcd):
    cluster, (h1, h2, w), agent = etcd
    a1 = agent(h1)
    new_lease(a1, "l", ["http://198.18.0.99:2379", f"http://{h1.addr}:2399"], "h1/havip")
    t0 = time.monotonic()
    with pytest.raises(Exception) as err:
        a1.call("l", "acquire")
    assert "etcd unreachable" in str(err.value) and "http://198.18.0.99:2379" in str(err.value)
    assert "connection refused" in str(err.value)
    assert time.monotonic() - t0 < 2 * REQ + 1.5                     # bounded by request_timeout per endpoint
    assert not a1.call("l", "held")


def test_a_key_written_by_someone_else_is_not_taken(etcd):
    cluster, (h1, h2, w), agent = etcd
    assert cluster.ctl("put", KEY, "somebody-else").returncode == 0
    a1 = agent(h1)
    new_lease(a1, "l", cluster.endpoints, "h1/havip")
    res = a1.call("l", "acquire")
    assert not res["ok"] and res["holder"] == "somebody-else"
    assert "bound to no etcd lease: it never expires" in res["reason"]
    assert a1.call("l", "release") is None                           # not ours: left alone
    assert cluster.get(KEY)["value"] == "somebody-else"


def test_wrong_password_and_permissions(etcd):
    cluster, (h1, h2, w), agent = etcd
    for cmd in (["user", "add", "root:rootpw"], ["role", "add", "havip"],
                ["role", "grant-permission", "havip", "--prefix=true", "readwrite", "/service/havip/"],
                ["user", "add", "havip:goodpw"], ["user", "grant-role", "havip", "havip"],
                ["user", "add", "other:otherpw"], ["auth", "enable"]):
        r = cluster.ctl(*cmd, env={"ETCDCTL_USER": "root:rootpw"} if cmd[0] == "auth" else None)
        assert r.returncode == 0, (cmd, r.stderr)
    a1 = agent(h1)
    new_lease(a1, "bad", cluster.endpoints, "h1/havip", user="havip", password="wrong")
    with pytest.raises(Exception, match="etcd refused user havip: authentication failed"):
        a1.call("bad", "acquire")
    new_lease(a1, "other", cluster.endpoints, "h1/havip", user="other", password="otherpw")
    with pytest.raises(Exception, match="permission denied"):
        a1.call("other", "acquire")
    new_lease(a1, "good", cluster.endpoints, "h1/havip", user="havip", password="goodpw")
    assert a1.call("good", "acquire")["ok"]
    time.sleep(RENEW * 3)
    assert a1.call("good", "view")["renewals"] >= 2
    assert a1.call("good", "release").startswith("etcd leader key")


def test_a_stale_key_of_our_own_is_released_by_a_fresh_process(etcd):
    """`havip cleanup` (or start-up) revokes what this host's killed havip left."""
    cluster, (h1, h2, w), agent = etcd
    a1 = agent(h1)
    new_lease(a1, "old", cluster.endpoints, "h1/havip", ttl=30)
    assert a1.call("old", "acquire")["ok"]
    new_lease(a1, "fresh", cluster.endpoints, "h1/havip")
    res = a1.call("fresh", "acquire")
    assert not res["ok"] and "this host's name: left by an earlier run" in res["reason"]
    said = a1.call("fresh", "release")
    assert said and "left by this host's earlier run" in said
    assert cluster.get(KEY) is None


def test_tls_right_ca_and_client_certificate_or_a_clear_error(topology, tmp_path):
    require_root()
    require_binary("etcd")
    require_binary("openssl")
    from havip.lab.etcd import EtcdCluster, TestCA

    h1 = topology.add_host("h1", 11, ipv6=False)
    ca, wrong = TestCA(tmp_path / "ca"), TestCA(tmp_path / "wrong", name="someone-else-ca")
    cluster = EtcdCluster([h1], tmp_path / "etcd", tls=ca)
    topology.on_close(cluster.close)
    cluster.start()
    assert cluster.endpoints == [f"https://{h1.addr}:2379"]
    cert, key = ca.client
    a1 = Agent(h1)
    try:
        new_lease(a1, "wrong", cluster.endpoints, "h1/havip", ca=str(wrong.ca), cert=str(cert), key_file=str(key))
        with pytest.raises(Exception, match=r"TLS certificate verify failed \(.*\): is the CA right\?"):
            a1.call("wrong", "acquire")
        new_lease(a1, "nocert", cluster.endpoints, "h1/havip", ca=str(ca.ca))
        with pytest.raises(Exception, match="etcd unreachable: https://.*TLS: etcd (rejected our client certificate|ended the handshake)"):
            a1.call("nocert", "acquire")        # etcd wants a client certificate
        new_lease(a1, "good", cluster.endpoints, "h1/havip", ca=str(ca.ca), cert=str(cert), key_file=str(key))
        assert a1.call("good", "acquire")["ok"]
        assert cluster.get(KEY)["value"] == "h1/havip"
        assert a1.call("good", "release").startswith("etcd leader key")
    finally:
        a1.close()
