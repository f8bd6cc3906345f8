"""The lab container's bind mounts: each folder once, whatever Python runs the lab.

Docker refuses a container with two mounts at one point ("Duplicate mount point: /usr"),
which is what Debian's own python3 (base prefix /usr) met."""

from __future__ import annotations

import pytest

from havip.lab.docker import lab_binds

SHARED = "/var/tmp/lab/shared"


def targets(binds: list[str]) -> list[str]:
    return [b.split(":")[1] for b in binds]


@pytest.mark.parametrize("base_prefix, prefix, expected_ro", [
    # Debian's python3, a venv in a clone under root's home (the README's path)
    ("/usr", "/root/havip/.venv", ["/etc", "/usr", "/root/havip/.venv"]),
    # Debian's python3 without a venv
    ("/usr", "/usr", ["/etc", "/usr"]),
    # a Python built into /usr/local, with a venv there too
    ("/usr/local", "/usr/local/venvs/havip", ["/etc", "/usr"]),
    # pyenv, and a venv beside the clone (the development machines)
    ("/root/.pyenv/versions/3.11.7", "/work/havip/.venv",
     ["/etc", "/usr", "/work/havip/.venv", "/root/.pyenv/versions/3.11.7"]),
    # a venv inside the base prefix, a trailing slash
    ("/opt/python3.11/", "/opt/python3.11/envs/lab", ["/etc", "/opt/python3.11", "/usr"]),
    # a venv that contains the interpreter it was made from
    ("/srv/env/python", "/srv/env", ["/etc", "/srv/env", "/usr"]),
])
def test_each_folder_is_mounted_once(base_prefix, prefix, expected_ro):
    binds = lab_binds(SHARED, prefix=prefix, base_prefix=base_prefix)
    points = targets(binds)
    assert len(points) == len(set(points)), binds
    assert sorted(b.split(":")[0] for b in binds if b.endswith(":ro")) == sorted(expected_ro)
    assert all(b.split(":")[0] == b.split(":")[1] for b in binds[:-1])
    assert binds[-1] == f"{SHARED}:/data:rw"


def test_no_mount_sits_inside_another_read_only_one():
    binds = lab_binds(SHARED, prefix="/usr/lib/havip-venv", base_prefix="/usr")
    ro = [b.split(":")[0] for b in binds if b.endswith(":ro")]
    assert not [(a, b) for a in ro for b in ro if a != b and b.startswith(a + "/")]
    assert ro == ["/etc", "/usr"]


def test_the_running_interpreter_is_covered():
    import sys

    ro = [b.split(":")[0] for b in lab_binds(SHARED) if b.endswith(":ro")]
    for path in (sys.prefix, sys.base_prefix):
        assert any(path == p or path.startswith(p + "/") for p in ro), (path, ro)
