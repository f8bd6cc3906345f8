"""The README's quick start says what a pristine Debian 12 lacks before `make demo` (make
itself, git, the CA certificates), and the Makefile installs the Debian packages before it
makes the venv, even under `make -j` (Debian's python3 needs python3-venv for `-m venv`).
`make fresh` (tests/fresh/run.sh) runs these very lines in a pristine root."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.conftest import REPO, require


def quickstart_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    lines = [re.sub(r"\s#.*$", "", ln).strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln]


def test_the_quick_start_installs_what_a_pristine_debian_lacks_before_make():
    lines = quickstart_lines()
    first_make = next(i for i, ln in enumerate(lines) if ln.startswith("make "))
    before = " ".join(lines[:first_make])
    assert "apt-get update" in before
    install = re.search(r"apt-get install -y ([\w .+-]+)", before)
    assert install and {"make", "git", "ca-certificates"} <= set(install[1].split())
    assert lines[first_make:] == ["make demo", "make test"]


def test_the_venv_is_made_after_the_debian_packages_even_in_parallel():
    require(shutil.which("make") is not None, "needs make")
    db = subprocess.run(["make", "-npq", "-C", str(REPO), "VENV=/nonexistent/venv"], capture_output=True,
                        text=True).stdout
    rule = next(ln for ln in db.splitlines() if ln.startswith("/nonexistent/venv/.installed:"))
    assert re.search(r"\|.*\bdeps\b", rule), rule      # order-only: deps first, no forced reinstall
    assert re.search(r"^venv: /nonexistent/venv/.installed$", db, flags=re.M)
