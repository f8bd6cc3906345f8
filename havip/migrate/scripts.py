"""Read the shell scripts of the classic recipe: which containers do they start, stop, inspect?

Pure text analysis; the caller supplies the script text. The seed's scripts look like

    RUNNING_STATUS=$(docker inspect --format '{{.State.Running}}' <docker id>)
    if [[ "${RUNNING_STATUS}" != "true" ]];then
    docker start <docker id>
    fi
"""

from __future__ import annotations

import re
import shlex

DockerUse = tuple[str, str]     # (verb, container as written)

_DOCKER = re.compile(r"\bdocker\s+(?:container\s+)?(start|stop|restart|kill|inspect)\b([^;&|)`\n]*)")
_VALUE_FLAGS = {"-f", "--format", "-t", "--time", "--type", "-s", "--signal", "--detach-keys"}
# Lines that only steer the shell: comments, conditionals, exits, brackets.
_GLUE = re.compile(r"(#|if\b|then\b|else\b|elif\b|fi\b|exit\b|set\b|do\b|done\b|[\[\]{}();])")


def docker_uses(script: str) -> list[DockerUse]:
    """(verb, container) for each docker start/stop/restart/kill/inspect in a script.

    A container written as a placeholder (`<docker id>`) or a variable (`$ID`) is
    returned as written; `is_placeholder` tells the caller to flag it.
    """
    uses = []
    for line in script.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in _DOCKER.finditer(line):
            placeholder = re.search(r"<[^>]*>", m[2])
            if placeholder:
                uses.append((m[1], placeholder[0]))
                continue
            try:
                words = shlex.split(m[2], comments=True)
            except ValueError:
                words = m[2].split()
            uses += [(m[1], name) for name in _positional(words)]
    return uses


def is_placeholder(name: str) -> bool:
    """`<docker id>` or `$CONTAINER`: the script does not say which container."""
    return name.startswith(("<", "$"))


def other_commands(script: str) -> list[str]:
    """Lines of a script that are neither docker commands nor shell glue."""
    return [ln.strip() for ln in script.splitlines()
            if ln.strip() and "docker" not in ln and not _GLUE.match(ln.strip())]


def split_command(command: str) -> list[str]:
    """A command line as words, the way a shell without expansions would split it."""
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def first_word(command: str) -> str:
    """The program a command line runs ('' for an empty line)."""
    words = split_command(command)
    return words[0] if words else ""


def _positional(words: list[str]) -> list[str]:
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in _VALUE_FLAGS
        else:
            out.append(word)
    return out
