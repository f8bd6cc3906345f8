"""The lease backend in the config: `backend: file` stays the default and the old forms
keep working; `backend: etcd` is validated as a whole, fencing inequality included."""

from __future__ import annotations

import pytest

from havip.config import parse
from tests.unit.test_config import GOOD, problems, with_

ETCD = {"backend": "etcd", "endpoints": ["http://198.18.0.1:2379", "http://198.18.0.2:2379"]}


def milvus(lease, **extra) -> dict:
    return with_(GOOD, milvus={"container": "milvus", "data_path": "/srv/milvus", "lease": lease, **extra})


@pytest.mark.parametrize("lease, backend, path", [
    (True, "file", "/srv/milvus/.havip-lease"),        # the forms before the etcd backend
    ({"path": "/nfs/l"}, "file", "/nfs/l"),
    ({"orphan_timeout": 5}, "file", "/srv/milvus/.havip-lease"),
    (ETCD, "etcd", None),                               # no lease file with etcd
])
def test_backend_default_and_old_forms(lease, backend, path):
    m = parse(milvus(lease)).milvus
    assert (m.lease.backend, m.lease_path) == (backend, path)


def test_etcd_defaults_satisfy_the_fencing_inequality():
    lease = parse(milvus(ETCD)).milvus.lease
    assert (lease.ttl, lease.renew_every, lease.request_timeout, lease.fence_margin) == (10, 2.5, 1.0, 3.0)
    assert lease.prefix == "/service/havip"
    assert lease.renew_every + lease.request_timeout + lease.fence_margin < lease.ttl


def test_etcd_full_tls_and_password_file():
    lease = parse(milvus({**ETCD, "endpoints": ["https://[fd00:198:18::1]:2379/"], "ca": "/etc/etcd/ca.pem",
                          "cert": "/etc/havip/c.pem", "key": "/etc/havip/k.pem", "user": "havip",
                          "password_file": "/etc/havip/etcd.pw", "ttl": 20, "prefix": "/service/milvus-a"})).milvus.lease
    assert lease.endpoints == ["https://[fd00:198:18::1]:2379"]


@pytest.mark.parametrize("lease, expected", [
    ({"backend": "etcd"},
     ["milvus.lease.endpoints: []: required with backend: etcd (e.g. [https://10.0.0.5:2379, ...])"]),
    ({"endpoints": ["http://a:2379"]}, ["milvus.lease.endpoints: ['http://a:2379']: is for backend: etcd"]),
    ({**ETCD, "path": "/x", "orphan_timeout": 1},
     ["milvus.lease.orphan_timeout: 1: is for backend: file", "milvus.lease.path: /x: is for backend: file"]),
    ({**ETCD, "endpoints": ["ftp://a:1"]},
     ["milvus.lease.endpoints.0: ftp://a:1: must be http://host:port or https://host:port, e.g. https://10.0.0.5:2379"]),
    ({**ETCD, "prefix": "havip"},
     ["milvus.lease.prefix: havip: must be an absolute key path such as /service/havip (letters, digits, '_', "
      "'.', '-' between slashes)"]),
    ({**ETCD, "ttl": 2.5}, ["milvus.lease.ttl: 2.5: must be a whole number"]),
    ({**ETCD, "ttl": 1}, ["milvus.lease.ttl: 1: must be between 2 and 3600 seconds (etcd counts whole seconds)"]),
    ({**ETCD, "ca": "/ca.pem", "cert": "/c.pem"},
     ["milvus.lease.ca: /ca.pem: needs https:// endpoints", "milvus.lease.cert: /c.pem: needs https:// endpoints",
      "milvus.lease.key: (missing): required with milvus.lease.cert (client certificate)"]),
    ({**ETCD, "endpoints": ["http://a:2379", "https://b:2379"]},
     ["milvus.lease.endpoints: ['http://a:2379', 'https://b:2379']: mixes http and https; use one scheme"]),
    ({**ETCD, "user": "havip"}, ["milvus.lease.user: havip: needs milvus.lease.password or password_file"]),
    ({**ETCD, "password": "s3cret"}, ["milvus.lease.user: (missing): required with a password"]),
    ({**ETCD, "user": "u", "password": "s3cret", "password_file": "/pw"},
     ["milvus.lease.password_file: /pw: give milvus.lease.password or password_file, not both"]),
])
def test_etcd_bad_input(lease, expected):
    # How a list is shown ([a, b] or ['a', 'b']) belongs to the config printer, not to these rules.
    def plain(lines):
        return sorted(line.replace("'http", "http").replace("2379'", "2379") for line in lines)
    assert plain(problems(milvus(lease))) == plain(expected)


def test_fencing_inequality_rejected():
    # 1.25 + 1 + 3 = 5.25 >= 5: the lease could expire while Milvus still runs.
    assert problems(milvus({**ETCD, "ttl": 5})) == [
        "milvus.lease.ttl: 5: must exceed renew_interval + request_timeout + fence_margin (1.25 + 1 + 3 = 5.25s): "
        "the holder must stop Milvus and remove the VIP before its etcd lease can expire"]
    assert problems(milvus({**ETCD, "renew_interval": 5, "request_timeout": 2})) == [
        "milvus.lease.ttl: 10: must exceed renew_interval + request_timeout + fence_margin (5 + 2 + 3 = 10s): "
        "the holder must stop Milvus and remove the VIP before its etcd lease can expire"]
    parse(milvus({**ETCD, "ttl": 5, "renew_interval": 1, "request_timeout": 0.5}))     # 1 + 0.5 + 3 < 5


def test_fence_margin_covers_a_kill():
    assert problems(milvus({**ETCD, "fence_margin": 1.5}, check_timeout=2)) == [
        "milvus.lease.fence_margin: 1.5: must be at least check_timeout + 1 (3s): the time to cancel a start and "
        "kill Milvus before the etcd lease can expire"]


def test_password_is_hidden():
    out = problems(milvus({**ETCD, "user": "u", "password": 1234}))
    assert out == ["milvus.lease.password: (hidden): must be a string (quote it in YAML)"]


def test_lease_off_ignores_etcd_keys():
    assert parse(milvus({"enabled": False, "backend": "etcd"})).milvus.lease_path is None
