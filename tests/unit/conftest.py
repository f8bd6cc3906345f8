"""Fixtures shared by the unit tests of the control socket."""

from __future__ import annotations

import pytest

from tests.unit.fake_daemon import FakeDaemon


@pytest.fixture
def daemon():
    """A FakeDaemon with its own loop thread, stopped after the test."""
    d = FakeDaemon()
    yield d
    d.close()
