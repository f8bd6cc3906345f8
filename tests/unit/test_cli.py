"""`havip check-config` and `havip import-keepalived` as a user runs them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from havip import config
from havip.cli import main

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "fixtures" / "seed"
VECTORS = REPO / "tests" / "vectors" / "keepalived"


def test_check_config_accepts_the_shipped_configs():
    for name in ("master", "backup"):
        res = CliRunner().invoke(main, ["check-config", str(REPO / "conf" / f"{name}.yaml")])
        assert res.exit_code == 0, res.output
        assert "ok" in res.output


def test_check_config_prints_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("interface: eth0\nvirtual_router_id: 300\npriority: 0\nvirtual_ipaddresses: [nonsense]\n")
    res = CliRunner().invoke(main, ["check-config", str(bad)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 3, res.output
    assert any("virtual_router_id: 300:" in line for line in lines)
    assert any("priority: 0:" in line for line in lines)
    assert any("virtual_ipaddresses.0: nonsense:" in line for line in lines)


def test_import_keepalived_lists_what_it_cannot_translate(tmp_path):
    res = CliRunner().invoke(main, ["import-keepalived", str(SEED / "master" / "keepalived.conf"),
                                    "--out", str(tmp_path)])
    assert res.exit_code == 1
    assert "weight -20" in res.output and "<docker id>" in res.output
    assert list(tmp_path.iterdir()) == []


def test_import_keepalived_partial_writes_a_valid_config(tmp_path):
    res = CliRunner().invoke(main, ["import-keepalived", "--partial", str(SEED / "backup" / "keepalived.conf"),
                                    "--out", str(tmp_path)])
    assert res.exit_code == 1                       # still says it was partial
    assert "runs `docker start`, not `docker stop`" in res.output
    (out,) = tmp_path.glob("*.yaml")
    cfg = config.load(out)
    assert cfg.virtual_router_id == 51 and cfg.priority == 91 and cfg.milvus is not None


def test_import_keepalived_vector_config_is_complete(tmp_path):
    res = CliRunner().invoke(main, ["import-keepalived", str(VECTORS / "v2-unicast-auth.h1.conf"),
                                    "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (out,) = tmp_path.glob("*.yaml")
    cfg = config.load(out)
    assert cfg.unicast is not None and [str(p) for p in cfg.unicast.peers] == ["198.18.0.21"]
    assert cfg.authentication.password == "secret12"
