"""Help output shared by `havip` and `havipctl`: command lists that say the whole first
paragraph of each command's help (click cuts it at about 45 characters), and where to go
next."""

from __future__ import annotations

import click

EPILOG_HAVIP = ("New here? As root, `havip lab demo` builds a two-host lab on this machine (network "
                "namespaces only) and shows a Milvus failover. Documentation: the docs/ folder of the havip "
                "repository, starting with docs/operations.md and docs/configuration.md.")
EPILOG_HAVIPCTL = ("What the states and reasons mean, and how to switch over or pause for maintenance: "
                   "docs/operations.md in the havip repository. To see it all work: `havip lab demo` (root).")


def summary(cmd: click.Command) -> str:
    """The command's short help if it sets one, else the first paragraph of its help, whole."""
    if cmd.short_help:
        return cmd.short_help
    return " ".join((cmd.help or "").split("\n\n")[0].split())


class Group(click.Group):
    """A click group whose command list is never truncated."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, summary(cmd)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
