"""pyproject.toml as current setuptools wants it: `project.license` as an SPDX string (a
TOML table made pip print a deprecation warning twice per install), with a setuptools
that reads it."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO


def test_license_is_an_spdx_expression_and_setuptools_reads_it():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    setuptools = next(r for r in meta["build-system"]["requires"] if r.startswith("setuptools"))
    minimum = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools.replace(" ", ""))
    assert minimum and int(minimum[1]) >= 77, setuptools     # PEP 639 license strings: setuptools 77
