"""The read pool's config: every problem at once, each as `path: value: reason`."""

from __future__ import annotations

import pytest

from havip.errors import ConfigError
from havip.pool.config import load, parse

BASE = {"writer": "192.168.1.104:19530", "read_nodes": ["192.168.1.85:19537", "172.16.10.1:19538"]}


def problems(data: dict, **kw) -> list[str]:
    kw.setdefault("resolve", lambda host: host.endswith(".example"))
    kw.setdefault("local", lambda host: False)
    with pytest.raises(ConfigError) as err:
        parse(data, **kw)
    return err.value.problems


def test_minimal_config_gets_milvus_ready_defaults():
    cfg = parse(BASE, local=lambda h: False)
    assert cfg.listen == "0.0.0.0:19540" and cfg.fallback == "writer"
    assert cfg.read_methods == ["Search", "HybridSearch", "Query"]
    assert cfg.nginx.client_max_body_size == "256m"
    assert (cfg.check.interval, cfg.check.timeout, cfg.check.rise, cfg.check.fall) == (1.0, 0.5, 2, 2)
    assert cfg.state_path == "/run/havip/pool.json"


def test_unknown_member_address():
    assert problems({**BASE, "read_nodes": ["milvus9.invalid:19530", "reader.example:19530"]}) == [
        "read_nodes.0: milvus9.invalid:19530: unknown host milvus9.invalid: it does not resolve, and nginx "
        "resolves upstream names once, when it loads the config"]


def test_member_that_is_not_host_port():
    assert problems({**BASE, "read_nodes": ["192.168.1.85"]}) == [
        "read_nodes.0: 192.168.1.85: must be host:port, e.g. 127.0.0.1:19530 or [::1]:19530"]


def test_duplicate_members_even_spelled_differently():
    assert problems({**BASE, "read_nodes": ["[fd00::1]:19530", "[fd00:0::1]:19530"]}) == [
        "read_nodes.1: '[fd00:0::1]:19530': same address as read_nodes.0; list each read node once"]


def test_writer_inside_the_pool():
    assert problems({**BASE, "read_nodes": ["192.168.1.85:19537", "192.168.1.104:19530"]}) == [
        "read_nodes.1: 192.168.1.104:19530: is the writer; the writer is not a read node (reads fall back to "
        "it when no read node is healthy, see fallback)"]


def test_port_clash_with_milvus():
    # The recipe's own warning: the pool cannot listen where a Milvus listens.
    assert problems({**BASE, "listen": "192.168.1.85:19537"}) == [
        "listen: 192.168.1.85:19537: clashes with read_nodes.0 (192.168.1.85:19537): the pool cannot listen "
        "on the port Milvus listens on; use another port, e.g. 19540"]
    # On a havip host behind the VIP, a wildcard listener on 19530 takes the local Milvus' port.
    assert problems({**BASE, "listen": "0.0.0.0:19530"}, local=lambda h: h == "192.168.1.104") == [
        "listen: 0.0.0.0:19530: clashes with writer (192.168.1.104:19530): the pool cannot listen on the port "
        "Milvus listens on; use another port, e.g. 19540"]
    parse({**BASE, "listen": "0.0.0.0:19530"}, local=lambda h: False)      # a host of its own: fine


def test_read_methods_come_from_the_proto():
    assert problems({**BASE, "read_methods": ["Search", "Serch", "Insert", "Search"]}) == [
        "read_methods.1: Serch: is not a method of milvus.proto.milvus.MilvusService; did you mean Search?",
        "read_methods.2: Insert: changes state, so it must reach the writer; only reads may go to the pool",
        "read_methods.3: Search: listed twice"]
    assert parse({**BASE, "read_methods": ["Search", "DescribeCollection"]}, local=lambda h: False)


def test_every_problem_at_once_in_config_order():
    got = problems({"writer": "w.invalid:19530", "read_nodes": ["10.0.0.1:1", "10.0.0.1:1"], "fallback": "nowhere",
                    "check": {"interval": 0.5, "timeout": 2, "rize": 3}, "nginx": {"client_max_body_size": "1x"},
                    "colour": "blue"})
    assert got == [
        "writer: w.invalid:19530: unknown host w.invalid: it does not resolve",
        "read_nodes.1: 10.0.0.1:1: same address as read_nodes.0; list each read node once",
        "fallback: nowhere: must be 'writer' or 'unavailable'",
        "check.rize: 3: unknown key; did you mean rise?",
        "nginx.client_max_body_size: 1x: must be an nginx size: a number with an optional k, m or g suffix, e.g. 256m",
        "colour: blue: unknown key",
    ]


def test_check_timeout_longer_than_the_interval():
    assert problems({**BASE, "check": {"interval": 0.5, "timeout": 1}}) == [
        "check.timeout: 1: must be at most check.interval (0.5s): a check must end before the next one is due"]


def test_missing_keys_and_empty_pool():
    assert problems({"read_nodes": []}) == ["writer: (missing): required", "read_nodes: []: must not be empty"]


def test_load_names_the_instance_after_the_file(tmp_path):
    f = tmp_path / "reads.yaml"
    f.write_text("writer: 192.168.1.104:19530\nread_nodes: [192.168.1.85:19537]\n")
    assert load(f, local=lambda h: False).instance == "reads"
    f.write_text("writer: [\n")
    with pytest.raises(ConfigError) as err:
        load(f)
    assert err.value.problems[0].startswith(f"{f}: invalid YAML")


def test_shipped_example_is_valid():
    from tests.conftest import REPO

    assert load(REPO / "conf" / "pool.yaml", resolve=lambda h: True, local=lambda h: False).read_nodes


def test_check_config_cli_prints_every_problem_and_exits_2(tmp_path):
    from click.testing import CliRunner

    from havip.cli import main

    f = tmp_path / "pool.yaml"
    f.write_text("writer: 198.18.0.21:19530\nread_nodes: [198.18.0.31:19530, 198.18.0.31:19530]\n"
                 "listen: 198.18.0.21:19530\n")
    res = CliRunner().invoke(main, ["pool", "check-config", "--no-nginx", str(f)])
    assert res.exit_code == 2
    assert res.output.splitlines() == [
        f"{f}: listen: 198.18.0.21:19530: clashes with writer (198.18.0.21:19530): the pool cannot listen on "
        "the port Milvus listens on; use another port, e.g. 19540",
        f"{f}: read_nodes.1: 198.18.0.31:19530: same address as read_nodes.0; list each read node once"]


def test_check_config_cli_runs_nginx_t_on_the_render(tmp_path):
    from click.testing import CliRunner

    from havip.cli import main
    from tests.conftest import REPO, require_binary

    require_binary("nginx")
    res = CliRunner().invoke(main, ["pool", "check-config", str(REPO / "conf" / "pool.yaml")])
    assert res.exit_code == 0, res.output
    assert res.output.endswith("ok (instance pool, 2 read nodes, writer 192.168.1.104:19530, listen 0.0.0.0:19540)\n")


def test_havipctl_pool_status_not_running(tmp_path):
    from click.testing import CliRunner

    from havip.ctl import main

    res = CliRunner().invoke(main, ["pool", "status", "--state", str(tmp_path / "none.json")])
    assert res.exit_code == 3 and "not running: no status file" in res.output
