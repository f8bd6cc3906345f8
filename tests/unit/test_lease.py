"""The storage lease on a real file with real flock: two hosts are two lease objects
(flock conflicts between open file descriptions, even in one process), a killed havip is
a killed child process."""

from __future__ import annotations

import json
import os
import signal

import pytest

from havip.errors import AdapterError
from havip.runtime.lease import StorageLease


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / ".havip-lease")


def record(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def test_one_holder_at_a_time(path):
    h1, h2 = StorageLease(path, "h1"), StorageLease(path, "h2")
    got = h1.acquire()
    assert got.ok and h1.held and "acquired (epoch 1)" in got.reason
    busy = h2.acquire()
    assert not busy.ok and busy.holder == "h1" and not h2.held
    assert busy.reason == (f"the storage lease {path} is held by h1, whose Milvus may be writing "
                           "the shared storage")
    assert record(path)["holder"] == "h1" and record(path)["state"] == "held"
    assert h1.release() == f"storage lease {path} released (epoch 1)"
    assert record(path)["state"] == "released" and not h1.held
    got = h2.acquire()
    assert got.ok and record(path) | {"holder": "h2", "epoch": 2, "state": "held"} == record(path)


def test_acquire_twice_is_idempotent_and_renew_rewrites_the_record(path):
    wall = iter([1000.0, 1000.0, 1005.5])
    h1 = StorageLease(path, "h1", wall=lambda: next(wall))
    assert h1.acquire().ok
    assert h1.acquire().reason == f"storage lease {path} already held"
    h1.renew()
    assert record(path)["renewed_at"] == 1005.5 and record(path)["acquired_at"] == 1000.0


def test_renew_fails_clearly_when_the_storage_stops_taking_writes(path):
    h1 = StorageLease(path, "h1")
    h1.acquire()
    os.close(h1._fd)        # what an NFS client that lost its lock sees: writes fail
    with pytest.raises(AdapterError, match=f"cannot write the storage lease {path}: Bad file descriptor"):
        h1.renew()
    h1._fd = None
    with pytest.raises(AdapterError, match="is not held by this host"):
        h1.renew()


def _killed_holder(path: str, holder: str) -> None:
    """A havip that took the lease and was SIGKILLed: the lock is gone, the record says held."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        ok = StorageLease(path, holder).acquire().ok
        os.write(w, b"1" if ok else b"0")
        signal.pause()
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.close(r)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_a_killed_holder_leaves_an_orphan_the_peer_waits_for(path):
    _killed_holder(path, "h1")
    clock = Clock()
    h2 = StorageLease(path, "h2", orphan_timeout=30, clock=clock)
    first = h2.acquire()
    assert not first.ok and first.holder == "h1"
    assert "its havip is gone without releasing it" in first.reason and "waiting up to 30s (0.0s so far)" in first.reason
    clock.t += 29
    assert not h2.acquire().ok
    clock.t += 1.5
    taken = h2.acquire()
    assert taken.ok and "taken from h1, which never released it (30s)" in taken.reason
    assert record(path)["holder"] == "h2" and record(path)["epoch"] == 2


def test_cleanup_of_the_killed_host_frees_the_peer_at_once(path):
    _killed_holder(path, "h1")
    # `havip cleanup` on h1 (a new process, the same holder name) after stopping Milvus:
    assert StorageLease(path, "h1").release() == f"storage lease {path} released (epoch 1)"
    assert StorageLease(path, "h2", orphan_timeout=3600).acquire().ok


def test_release_never_touches_a_lease_another_host_holds(path):
    h2 = StorageLease(path, "h2")
    assert h2.acquire().ok
    assert StorageLease(path, "h1").release() is None       # locked by h2
    h2.release()
    assert StorageLease(path, "h1").release() is None       # free, but not h1's
    assert record(path)["holder"] == "h2" and record(path)["state"] == "released"


def test_an_own_stale_record_is_no_orphan(path):
    _killed_holder(path, "h1")
    again = StorageLease(path, "h1", orphan_timeout=3600)   # h1's havip restarted
    assert again.acquire().ok


@pytest.mark.parametrize("content", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b'{"state": "held"}'])
def test_a_damaged_record_does_not_block_or_crash(path, content):
    with open(path, "wb") as f:
        f.write(content)
    h1 = StorageLease(path, "h1", orphan_timeout=3600)
    assert h1.acquire().ok
    assert h1.status()["holder"] == "h1"


def test_unusable_path_is_a_clear_error(tmp_path):
    lease = StorageLease(str(tmp_path / "missing-dir" / ".havip-lease"), "h1")
    with pytest.raises(AdapterError, match="cannot open the storage lease .*: No such file or directory"):
        lease.acquire()
    assert lease.status()["holder"] is None and not lease.held


def test_status_reads_without_the_lock(path):
    h1, h2 = StorageLease(path, "h1"), StorageLease(path, "h2")
    h1.acquire()
    st = h2.status()
    assert st == {"path": path, "held_here": False, "holder": "h1", "state": "held", "epoch": 1,
                  "renewed_at": record(path)["renewed_at"]}
    assert h1.status()["held_here"] is True


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
srv:/export /cifs/test/nfs nfs4 rw,vers=4.2,hard,proto=tcp 0 0
srv:/old /mnt/old nfs rw,vers=3,nolock 0 0
//srv/share /mnt/smb cifs rw,nobrl,vers=3.0 0 0
srv:/x /mnt/with\\040space nfs4 rw,local_lock=all 0 0
"""


@pytest.mark.parametrize("path, warning", [
    ("/cifs/test/nfs/milvus/db/.havip-lease", None),
    ("/var/lib/milvus/.havip-lease", None),
    ("/mnt/old/db/.havip-lease", "on nfs mounted at /mnt/old with nolock"),
    ("/mnt/smb/.havip-lease", "on cifs mounted at /mnt/smb with nobrl"),
    ("/mnt/with space/.havip-lease", "on nfs4 mounted at /mnt/with space with local_lock=all"),
    ("/mnt/oldish/.havip-lease", None),                  # a prefix, not inside
])
def test_mount_options_that_make_locks_local_are_named(path, warning):
    from havip.runtime.lease import mount_warning

    got = mount_warning(path, MOUNTS)
    if warning is None:
        assert got is None
    else:
        assert warning in got and "the lease cannot see the other host's" in got


def test_view_reports_what_this_host_last_saw_without_touching_the_storage(path):
    h1, h2 = StorageLease(path, "h1"), StorageLease(path, "h2")
    assert h2.view() == {"path": path, "held_here": False, "known": False, "holder": None, "state": None,
                         "epoch": None, "renewed_at": None}
    h1.acquire()
    assert not h2.acquire().ok
    os.unlink(path)                      # view() must not read the file: nothing changes
    assert h2.view()["holder"] == "h1" and h2.view()["state"] == "held" and h2.view()["known"]
    assert h1.view()["held_here"] and h1.view()["epoch"] == 1


def test_lease_probe_is_named_and_fails_when_the_record_takes_no_write(path):
    from havip.checks.probes import LeaseProbe

    h1 = StorageLease(path, "h1")
    probe = LeaseProbe(h1, timeout=0.5)
    assert probe.check.check_name == "lease"
    assert not probe.check().ok              # not held: nothing to renew
    h1.acquire()
    r = probe.check()
    assert (r.name, r.ok, r.reason) == ("lease", True, f"storage lease {path} renewed")
