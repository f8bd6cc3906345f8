"""A bench/ script loaded as a module for a unit test, with bench/ on sys.path while it is
in use (the scripts import each other by name, as they do when run)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


@contextmanager
def bench_module(script: str, name: str | None = None) -> Iterator[object]:
    """bench/SCRIPT.py as a fresh module named `name` (default SCRIPT)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name or script, BENCH / f"{script}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))
