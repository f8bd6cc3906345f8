"""`havip --help`, `havip lab --help` and `havipctl --help` list every command with its
whole first sentence (click cut them at about 45 characters, ending in "...") and say
where to go next: the lab demo and docs/."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from havip.cli import main as havip_main
from havip.ctl import main as havipctl_main
from havip.lab.cli import lab as lab_group


def help_text(group: click.Group, width: int) -> str:
    res = CliRunner().invoke(group, ["--help"], terminal_width=width)
    assert res.exit_code == 0, res.output
    return res.output


def first_paragraph(cmd: click.Command) -> str:
    return " ".join((cmd.help or "").split("\n\n")[0].split())


@pytest.mark.parametrize("group", [havip_main, havipctl_main, lab_group], ids=["havip", "havipctl", "havip lab"])
@pytest.mark.parametrize("width", [60, 80, 120])
def test_every_command_is_described_whole(group, width):
    text = help_text(group, width)
    flat = " ".join(text.split())
    assert "..." not in text.split("Commands:")[1]
    for name, cmd in group.commands.items():
        assert name in text
        assert first_paragraph(cmd) in flat, f"{name}: {first_paragraph(cmd)!r} not whole in:\n{text}"


@pytest.mark.parametrize("group", [havip_main, havipctl_main], ids=["havip", "havipctl"])
def test_help_points_to_the_demo_and_the_docs(group):
    flat = " ".join(help_text(group, 80).split())
    assert "havip lab demo" in flat
    assert "docs/operations.md" in flat
