"""`havip check-config` and `havip import-keepalived` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_import_keepalived_partial_writes_a_config_check_config_rejects_until_edited(tmp_path):
    # issue 8 item 6: the CHANGE-ME placeholder must not pass `havip check-config`.
    res = CliRunner().invoke(main, ["import-keepalived", "--partial", str(SEED / "backup" / "keepalived.conf"),
                                    "--out", str(tmp_path)])
    assert res.exit_code == 1                       # still says it was partial
    assert "runs `docker start`, not `docker stop`" in res.output
    (out,) = tmp_path.glob("*.yaml")
    res = CliRunner().invoke(main, ["check-config", str(out)])
    assert res.exit_code == 2 and "ok" not in res.output
    assert res.output.strip() == (f"{out}: milvus.container: CHANGE-ME: is a placeholder written by havip "
                                  "import-keepalived; set the name or ID of the Milvus container")
    out.write_text(out.read_text().replace("CHANGE-ME", "milvus-standalone"))
    cfg = config.load(out)
    assert cfg.virtual_router_id == 51 and cfg.priority == 91 and cfg.milvus.container == "milvus-standalone"


def test_import_keepalived_without_partial_does_not_claim_it_wrote_anything(tmp_path):
    res = CliRunner().invoke(main, ["import-keepalived", str(SEED / "backup" / "keepalived.conf"),
                                    "--out", str(tmp_path)])
    assert res.exit_code == 1 and list(tmp_path.iterdir()) == []
    assert "written as" not in res.output and "--partial writes CHANGE-ME" in res.output


def test_import_keepalived_vector_config_is_complete(tmp_path):
    res = CliRunner().invoke(main, ["import-keepalived", str(VECTORS / "v2-unicast-auth.h1.conf"),
                                    "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (out,) = tmp_path.glob("*.yaml")
    cfg = config.load(out)
    assert cfg.unicast is not None and [str(p) for p in cfg.unicast.peers] == ["198.18.0.21"]
    assert cfg.authentication.password == "secret12"


# ------------------------------------------------------------------ hostile files (issue 9, finding 6)


def _check(tmp_path, body: bytes | str) -> tuple[int, str]:
    path = tmp_path / "x.yaml"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    res = CliRunner().invoke(main, ["check-config", str(path)])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


GOOD_YAML = ("interface: eth0\nvirtual_router_id: 51\nvirtual_ipaddresses: [198.18.0.50/24]\n")


@pytest.mark.parametrize("body, expected", [
    (GOOD_YAML + "priority: 1\x00\n", "line 4: character '\\x00' is not allowed in YAML"),
    ("a: " + "[" * 1200 + "]" * 1200 + "\n", "invalid YAML: nested too deeply"),
    ("a:\n" + "- " * 3000 + "x\n", "invalid YAML: nested too deeply"),
    (GOOD_YAML + "priority: " + "7" * 5000 + "\n", "invalid YAML value: Exceeds the limit"),
    (GOOD_YAML + "when: 2024-13-45\n", "invalid YAML value: month must be in 1..12"),
    (b"interface: eth\xe9\n", "line 1: byte 0xe9 is not UTF-8"),
], ids=["nul", "deep-flow", "deep-block", "5000-digits", "bad-date", "latin-1"])
def test_check_config_hostile_files_get_one_line(tmp_path, body, expected):
    code, out = _check(tmp_path, body)
    assert code == 2
    assert len(out.strip().splitlines()) == 1 and expected in out, out


def test_check_config_deep_value_is_shown_bounded(tmp_path):
    # Deep but loadable: the error printer must not walk (or dump) the whole value.
    code, out = _check(tmp_path, GOOD_YAML + "extra: " + "[" * 150 + "]" * 150 + "\n")
    assert code == 2 and out.strip() == f"{tmp_path / 'x.yaml'}: extra: [[[[...]]]]: unknown key"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
    code, out = _check(tmp_path, GOOD_YAML + bomb)
    assert code == 2 and len(out.strip().splitlines()) == 9 and all(len(line) < 200 for line in out.splitlines())


@pytest.mark.parametrize("unicast, expected", [
    ({"peers": ["127.0.0.1"]}, "unicast.peers.0: 127.0.0.1: is a loopback address"),
    ({"peers": ["224.0.0.18"]}, "unicast.peers.0: 224.0.0.18: is a multicast address"),
    ({"peers": ["0.0.0.0"]}, "unicast.peers.0: 0.0.0.0: is the unspecified address"),
    ({"peers": ["255.255.255.255"]}, "unicast.peers.0: 255.255.255.255: is the limited broadcast address"),
    ({"peers": ["198.18.0.255"]}, "unicast.peers.0: 198.18.0.255: is the broadcast address of 198.18.0.0/24"),
    ({"peers": ["198.18.0.0"]}, "unicast.peers.0: 198.18.0.0: is the network address of 198.18.0.0/24"),
    ({"source": "224.0.0.18", "peers": ["198.18.0.2"]}, "unicast.source: 224.0.0.18: is a multicast address"),
    ({"source": "127.0.0.1", "peers": ["198.18.0.2"]}, "unicast.source: 127.0.0.1: is a loopback address"),
    ({"source": "198.18.0.2", "peers": ["198.18.0.2"]}, "unicast.peers.0: 198.18.0.2: is unicast.source itself"),
])
def test_check_config_refuses_unicast_addresses_that_are_not_a_host(tmp_path, unicast, expected):
    import yaml

    code, out = _check(tmp_path, GOOD_YAML + yaml.safe_dump({"unicast": unicast}))
    assert code == 2 and len(out.strip().splitlines()) == 1 and expected in out, out


@pytest.mark.parametrize("vip, expected", [
    ("198.18.0.0/24", "is the network address of 198.18.0.0/24"),
    ("198.18.0.255/24", "is the broadcast address of 198.18.0.0/24"),
    ("255.255.255.255/32", "is the limited broadcast address"),
    ("fd00:198:18::/64", "is the Subnet-Router anycast (RFC 4291 2.6.1) address of fd00:198:18::/64"),
])
def test_check_config_refuses_a_vip_that_is_not_a_host_address(tmp_path, vip, expected):
    code, out = _check(tmp_path, GOOD_YAML.replace("198.18.0.50/24", vip) + ("version: 3\n" if ":" in vip else ""))
    assert code == 2 and out.strip().endswith(f"virtual_ipaddresses.0: {vip}: {expected}; use a host address"), out


@pytest.mark.parametrize("vip", ["198.18.0.0/31", "198.18.0.1/31", "198.18.0.255/32", "198.18.0.0/32",
                                 "198.18.0.1/24", "198.18.0.254/24"])
def test_check_config_accepts_host_addresses_at_subnet_edges(tmp_path, vip):
    code, out = _check(tmp_path, GOOD_YAML.replace("198.18.0.50/24", vip))
    assert code == 0, out


def test_check_config_never_echoes_a_beacon_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("interface: eth0\nvirtual_router_id: 51\npriority: 100\n"
                   "virtual_ipaddresses: [198.18.0.50/24]\n"
                   "beacon:\n  keys: [short-secret-0001x, 5]\n  keys: [dup-secret-00002]\n")
    res = CliRunner().invoke(main, ["check-config", str(bad)])
    assert res.exit_code == 2
    assert "beacon.keys" in res.output or "keys" in res.output
    assert "short-secret" not in res.output and "dup-secret" not in res.output, res.output
    assert "(hidden)" in res.output
