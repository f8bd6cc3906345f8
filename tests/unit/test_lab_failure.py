"""A lab failure is one ClickException: a sentence, the cause in its own words (a
command's stderr, the Docker engine's explanation), where the logs are; the lab is taken
down first. Over a fake lab: no root needed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import docker.errors
import pytest

from havip.lab.cli import failure
from havip.lab.netns import CommandFailed, run


class FakeLab:
    def __init__(self, workdir: Path, down_fails: bool = False):
        self.workdir = workdir
        self.log_dir = workdir / "havip"
        self.down_calls = 0
        self.down_fails = down_fails

    def down(self) -> None:
        self.down_calls += 1
        if self.down_fails:
            raise RuntimeError("namespace hvx-sw is busy")


def test_a_failed_command_shows_its_own_stderr():
    with pytest.raises(CommandFailed) as info:
        run(["sh", "-c", "echo 'Cannot find device \"lo\"' >&2; exit 255"])
    assert isinstance(info.value, subprocess.CalledProcessError)   # callers that caught that still do
    assert str(info.value) == ("`sh -c 'echo '\"'\"'Cannot find device \"lo\"'\"'\"' >&2; exit 255'` exited "
                               "with status 255: Cannot find device \"lo\"")


@pytest.mark.parametrize("exc, cause", [
    (CommandFailed(255, ["ip", "-n", "hvl-sw", "link", "set", "lo", "up"], "", "Cannot find device \"lo\"\n"),
     "`ip -n hvl-sw link set lo up` exited with status 255: Cannot find device \"lo\""),
    (docker.errors.APIError("400 Client Error", explanation='Duplicate mount point: /usr'),
     "Docker engine: Duplicate mount point: /usr"),
    (docker.errors.ImageNotFound("404", explanation="No such image: havip-lab/nope:latest"),
     "Docker engine: No such image: havip-lab/nope:latest"),
    (docker.errors.DockerException("Error while fetching server API version"),
     "Error while fetching server API version"),
    (TimeoutError("timed out after 30s waiting for dockerd in hvl-h1"),
     "timed out after 30s waiting for dockerd in hvl-h1"),
])
def test_the_cause_in_its_own_words_and_where_the_logs_are(tmp_path, exc, cause):
    lab = FakeLab(tmp_path)
    err = failure("The lab did not come up", lab, exc)
    assert isinstance(err, click.ClickException)
    assert lab.down_calls == 1
    lines = err.message.splitlines()
    assert lines[0] == "The lab did not come up, and everything it made has been removed."
    assert lines[1] == f"  cause: {cause}"
    assert lines[2].startswith(f"  logs: {tmp_path / 'havip'} ")
    assert "Traceback" not in err.message


def test_an_unexpected_error_is_short_too_with_its_traceback_in_the_logs(tmp_path):
    lab = FakeLab(tmp_path)
    try:
        {}["hosts"]
    except KeyError as exc:
        err = failure("The demo failed", lab, exc)
    log = tmp_path / "havip" / "lab-error.log"
    assert f"  cause: KeyError: 'hosts' (traceback in {log})" in err.message.splitlines()
    assert "Traceback" in log.read_text() and "Traceback" not in err.message


def test_a_failed_teardown_is_said_with_what_to_run(tmp_path):
    err = failure("The lab did not come up", FakeLab(tmp_path, down_fails=True), TimeoutError("dockerd"))
    assert err.message.splitlines()[0] == (
        f"The lab did not come up, and removing what it made failed too (namespace hvx-sw is busy); "
        f"run `havip lab down --workdir {tmp_path}`.")


def test_ctrl_c_takes_the_lab_down_and_stays_ctrl_c(tmp_path):
    lab = FakeLab(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        failure("The lab did not come up", lab, KeyboardInterrupt())
    assert lab.down_calls == 1
