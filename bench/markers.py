"""Rewrite the figures between two HTML-comment markers in a doc, keeping the prose around them."""

from __future__ import annotations

import re
from pathlib import Path


def write_block(path: str | Path, begin: str, end: str, body: list[str]) -> str:
    """Replace the text between `begin` and `end` in `path` (or append them); return the block."""
    block = "\n".join([begin, *body, end])
    out = Path(path)
    text = out.read_text() if out.exists() else ""
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    out.write_text(text)
    return block
