"""`havip lab up` that fails: one sentence, the failing command's own stderr or the Docker
engine's explanation, where the logs are, and nothing left behind (namespaces, dockerd,
mounts, the lab's state file)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import click
import pytest

from havip.lab.havipd import havip_argv
from havip.lab.netns import NETNS_DIR
from tests.conftest import require_binary, require_root

pytestmark = [pytest.mark.root]


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="hvf", dir="/tmp"))
    yield d / "lab"
    shutil.rmtree(d, ignore_errors=True)


def namespaces(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix)) if NETNS_DIR.exists() else []


def mounts_under(path: Path) -> list[str]:
    points = (ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines())
    return [m for m in points if m == str(path) or m.startswith(f"{path}/")]


def test_a_failing_ip_command_is_shown_in_its_own_words_and_nothing_is_left(workdir):
    require_root()
    # Interface names are limited to 15 characters: the first veth of this prefix is refused
    # by the kernel after two namespaces were made.
    prefix = "hv" + secrets.token_hex(2) + "x" * 12
    res = subprocess.run([*havip_argv(), "lab", "up", "--workdir", str(workdir)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HAVIP_LAB_PREFIX": prefix})
    left = namespaces(prefix)
    for ns in left:         # our own, by name, should the lab not have removed them
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr
    assert "Traceback" not in err
    assert "Error: The lab did not come up, and everything it made has been removed." in err
    assert f"  cause: `ip link add {prefix}p11 netns {prefix}-sw type veth peer name eth0 netns {prefix}-h1` " \
           f"exited with status" in err
    assert err.split("exited with status", 1)[1].split(":", 1)[1].strip().startswith("Error:"), err  # ip's own
    assert f"  logs: {workdir / 'havip'} " in err
    assert not left, f"namespaces left behind: {left}"
    assert not (workdir / "lab.json").exists()


def test_a_docker_api_error_is_shown_in_the_engine_s_words_and_nothing_is_left(workdir):
    require_root()
    require_binary("dockerd")
    from havip.lab.cli import start_lab
    from havip.lab.milvuslab import MilvusLab

    prefix = "hv" + secrets.token_hex(2)
    lab = MilvusLab(workdir, prefix=prefix, image="havip-lab/nope:latest")
    said = []
    try:
        with pytest.raises(click.ClickException) as info:
            start_lab(lab, echo=lambda msg, err=False: said.append(msg))
        dockerd = lab.dockerds["h1"].proc
    finally:
        if namespaces(prefix):
            lab.down()
    lines = info.value.message.splitlines()
    assert lines[0] == "The lab did not come up, and everything it made has been removed."
    assert lines[1].startswith("  cause: Docker engine: No such image: havip-lab/nope:latest"), lines
    assert lines[2].startswith(f"  logs: {workdir / 'havip'} ")
    assert said[-1] == "The lab did not come up; removing what was made."
    assert not namespaces(prefix)
    assert dockerd.poll() is not None
    assert not mounts_under(workdir)
    assert "API listen on" in (workdir / "havip" / "dockerd-h1.log").read_text()   # the log outlives the lab
    assert not (workdir / "lab.json").exists() and not (workdir / "h1").exists()


def test_a_switch_that_fails_to_come_up_removes_its_namespace():
    require_root()
    from havip.lab.netns import CommandFailed, Topology

    class FailingSwitch(Topology):
        def sw(self, *argv: str):
            raise CommandFailed(2, list(argv), "", "Error: injected failure\n")

    prefix = "hv" + secrets.token_hex(2)
    with pytest.raises(CommandFailed, match="injected failure"):
        FailingSwitch(prefix)
    assert not namespaces(prefix)
