"""Which keys a SIGHUP applies live and which wait for a restart."""

import yaml

from havip import config
from havip.daemon import reload

BASE = {"interface": "eth0", "virtual_router_id": 51, "priority": 110,
        "virtual_ipaddresses": ["198.18.0.50/24"], "milvus": {"container": "milvus", "start_timeout": 60}}


def _plan(tmp_path, **changes):
    old = config.parse(BASE, default_instance="t")
    new = {**BASE, **changes}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(new))
    return old, *reload.plan(old, str(path))


def test_nothing_changed(tmp_path):
    old, cfg, applied, restart = _plan(tmp_path)
    assert cfg is old and applied == [] and restart == []


def test_live_and_restart_keys_are_told_apart(tmp_path):
    old, cfg, applied, restart = _plan(tmp_path, priority=120, preempt=False, interface="eth1",
                                       milvus={"container": "other", "start_timeout": 30})
    assert applied == ["priority", "preempt", "milvus.start_timeout"]
    assert restart == ["interface", "milvus.container"]
    assert cfg.priority == 120 and cfg.preempt is False and cfg.milvus.start_timeout == 30
    assert cfg.interface == "eth0" and cfg.milvus.container == "milvus"


def test_a_hostile_file_at_reload_is_a_config_error_not_a_dead_loop(tmp_path):
    # A SIGHUP runs reload on the loop thread: a NUL byte or deep nesting used to raise
    # yaml's ReaderError / RecursionError there, past the `except ConfigError`.
    import pytest

    old = config.parse(BASE, default_instance="t")
    path = tmp_path / "t.yaml"
    for body in (yaml.safe_dump(BASE) + "\x00\n", "a: " + "[" * 1200 + "]" * 1200 + "\n",
                 yaml.safe_dump(BASE) + "when: 2024-13-45\n"):
        path.write_text(body)
        with pytest.raises(config.ConfigError):
            reload.plan(old, str(path))
