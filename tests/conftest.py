"""Shared fixtures. Tests that need root, namespaces, Docker or keepalived never skip
under CI=true: a missing prerequisite is a failure there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, why: str) -> None:
    """Fail under CI, skip elsewhere, when a prerequisite is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI: {why}")
    pytest.skip(why)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces)")
    require(shutil.which("ip") is not None and shutil.which("nsenter") is not None,
            "needs iproute2 and util-linux (ip, nsenter)")


def require_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
    require(path is not None, f"needs {name} (make deps installs it)")
    return path


@pytest.fixture
def topology():
    """A fresh switch namespace; add hosts with topology.add_host(name, index)."""
    require_root()
    from havip.lab.netns import Topology

    topo = Topology()
    try:
        yield topo
    finally:
        topo.close()


def require_fuse() -> None:
    """The lab's per-host storage views (havip.lab.storage): /dev/fuse, libfuse2, fusepy."""
    import ctypes.util
    import importlib.util

    require(os.path.exists("/dev/fuse"), "needs /dev/fuse (the fuse kernel module)")
    require(ctypes.util.find_library("fuse") is not None, "needs libfuse2 (make deps installs it)")
    require(importlib.util.find_spec("fuse") is not None, "needs fusepy (make venv installs it)")
