"""The read pool's systemd unit: `systemd-analyze verify` accepts it and it runs what it should."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require_binary

UNIT = REPO / "systemd" / "havip-pool.service"


def test_systemd_analyze_verify_is_clean(tmp_path):
    exe = Path(sys.executable).parent / "havip"
    havip = str(exe) if exe.exists() else shutil.which("havip") or pytest.fail("havip is not installed")
    (tmp_path / UNIT.name).write_text(UNIT.read_text().replace("/usr/local/bin/havip", havip))
    analyze = require_binary("systemd-analyze")
    res = subprocess.run([analyze, "verify", "--man=no", f"./{UNIT.name}"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env={"SYSTEMD_LOG_COLOR": "0", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_unit_checks_the_config_first_and_leaves_nginx_to_the_daemon():
    ini = configparser.ConfigParser(strict=False, interpolation=None)
    ini.read_string(UNIT.read_text())
    svc = ini["Service"]
    assert svc["ExecStartPre"] == "/usr/local/bin/havip pool check-config /etc/havip/pool/pool.yaml"
    assert svc["ExecStart"] == "/usr/local/bin/havip pool run -c /etc/havip/pool/pool.yaml"
    assert svc["KillMode"] == "process" and svc["RestartPreventExitStatus"] == "2"
    assert "/var/lib/havip/pool" in svc["ReadWritePaths"]
