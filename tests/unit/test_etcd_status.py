"""The etcd lease in `havipctl status` and the metrics; the daemon builds it from the config."""

from __future__ import annotations

import pytest

from havip.config import parse
from havip.ctl import _lease_line
from havip.errors import AdapterError
from havip.metrics import Metrics
from tests.unit.test_config import GOOD, with_

VIEW = {"backend": "etcd", "path": "/service/havip/51/leader", "key": "/service/havip/51/leader", "held_here": True,
        "known": True, "holder": "h1/master", "state": "held", "epoch": 7, "lease_id": "694d8d7a9f2c1a04",
        "ttl_left": 8.7, "renewals": 3, "endpoint": "http://198.18.0.11:2379", "last_error": None}


def test_status_line_shows_backend_holder_lease_and_ttl():
    assert _lease_line(VIEW) == ("etcd /service/havip/51/leader: held by this host (h1/master, lease "
                                 "694d8d7a9f2c1a04, ttl left 8.7s via http://198.18.0.11:2379)")
    lost = {**VIEW, "state": "lost", "last_error": "cannot prove the etcd lease"}
    assert _lease_line(lost).endswith("; LOST: cannot prove the etcd lease")
    other = {**VIEW, "held_here": False, "holder": "h2/backup", "ttl_left": None}
    assert _lease_line(other) == "etcd /service/havip/51/leader: held by h2/backup (lease 694d8d7a9f2c1a04)"
    assert _lease_line({**other, "holder": None, "last_error": "etcd unreachable: x"}) == (
        "etcd /service/havip/51/leader: free; last error: etcd unreachable: x")


def test_metrics_show_backend_holder_lease_id_and_ttl():
    m = Metrics({"vrrp_instance": "master", "interface": "eth0", "vrid": "51", "version": "2"})
    m.observe({"lease": VIEW})
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    assert "havip_lease_ttl_left_seconds" in text and " 8.7" in text
    assert 'backend="etcd"' in text and 'holder="h1/master"' in text and 'lease_id="694d8d7a9f2c1a04"' in text


def test_build_makes_an_etcd_lease_and_reads_the_password_file(tmp_path):
    from havip.daemon.build import etcd_lease

    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    lease_cfg = {"backend": "etcd", "endpoints": ["http://198.18.0.1:2379"], "user": "havip",
                 "password_file": str(pw), "holder": "h1/master"}
    cfg = parse(with_(GOOD, milvus={"container": "milvus", "lease": lease_cfg}))
    lease = etcd_lease(cfg)
    assert (lease.key, lease.holder, lease._gw.password) == ("/service/havip/51/leader", "h1/master", "s3cret")
    assert lease.view()["known"] is False and not lease.held
    lease.close()
    pw.unlink()
    with pytest.raises(AdapterError, match=f"milvus.lease.password_file: {pw}: cannot read"):
        etcd_lease(cfg)
