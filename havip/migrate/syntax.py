"""keepalived.conf syntax: statements, `name args { ... }` blocks, `!`/`#` comments, quotes.

keepalived's grammar is line-oriented: a statement is the words on one line; a `{`
opens a block whose header is the statement before it (on the same line, or on the
line above); `}` closes it. A comment starts at a word that begins with `!` or `#`.
Quoted strings ("..." or '...') are one word and may hold spaces, braces and `#`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

MAX_DEPTH = 32      # keepalived configs nest 3 or 4 levels; deeper blocks are reported, not read
_TOKEN = re.compile(r'"([^"]*)"?|\'([^\']*)\'?|([{}])|([!#].*)|([^\s{}"\'][^\s{}"\']*)')


@dataclass(frozen=True)
class Node:
    """One statement; `children` is a list for a block and None for a plain line."""

    line: int
    words: tuple[str, ...]
    children: list[Node] | None = None

    @property
    def key(self) -> str:
        return self.words[0] if self.words else ""

    @property
    def text(self) -> str:
        """The statement as it would be written, without comments."""
        shown = " ".join(f'"{w}"' if not w or re.search(r"[\s{}#!]", w) else w for w in self.words)
        return f"{shown} {{".lstrip() if self.children is not None else shown


def _tokens(text: str) -> Iterator[tuple[int, str, str]]:
    """(line, kind, value); kind is word, open, close or eol."""
    for number, line in enumerate(text.splitlines(), 1):
        for m in _TOKEN.finditer(line):
            if m[4] is not None:
                break
            if m[3]:
                yield number, "open" if m[3] == "{" else "close", m[3]
            else:
                yield number, "word", next(g for g in (m[1], m[2], m[5]) if g is not None)
        yield number, "eol", ""


def parse_conf(text: str) -> tuple[list[Node], list[str]]:
    """The top-level statements, and `LINE: text: problem` for unbalanced braces.

    Blocks nested deeper than MAX_DEPTH are reported once and skipped (their braces are
    still counted), so a hostile file cannot make the translation recurse without bound.
    """
    root: list[Node] = []
    stack: list[list[Node]] = [root]
    opened: list[Node] = []
    words: list[str] = []
    start, problems = 0, []
    skipped = 0             # depth inside a block that is too deep to read

    def flush() -> None:
        if words:
            stack[-1].append(Node(start, tuple(words)))
            words.clear()

    for line, kind, value in _tokens(text):
        if skipped:
            skipped += {"open": 1, "close": -1}.get(kind, 0)
            continue
        if kind == "open" and len(opened) >= MAX_DEPTH:
            flush()
            problems.append(f"{line}: {{: blocks nested more than {MAX_DEPTH} deep; this block is not read")
            skipped = 1
            continue
        if kind == "word":
            start = start if words else line
            words.append(value)
        elif kind == "eol":
            flush()
        elif kind == "open":
            siblings = stack[-1]
            if not words and siblings and siblings[-1].children is None:
                header = siblings.pop()           # `name` on one line, `{` on the next
                node = Node(header.line, header.words, [])
            else:
                node = Node(start if words else line, tuple(words), [])
                words.clear()
            siblings.append(node)
            stack.append(node.children)
            opened.append(node)
        else:
            flush()
            if opened:
                stack.pop()
                opened.pop()
            else:
                problems.append(f"{line}: }}: closes a block that was never opened")
    if skipped:
        problems.append(f"{line}: {{: a block nested more than {MAX_DEPTH} deep is never closed")
    problems += [f"{n.line}: {n.text}: this block is never closed" for n in opened]
    return root, problems
