"""The lab's per-host storage view (havip.lab.storage): what the storage-fault e2e tests
rely on, checked alone in a few seconds. One host's view is a FUSE passthrough in a mount
namespace of its own: invisible from the root namespace, its flock excludes a lock on the
real file (as an NFS server's lock would), its switches fail or block writes through it
only, and close() leaves no process and no mount behind."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from havip.lab.netns import wait_for
from havip.lab.storage import HostStorage
from tests.conftest import require_binary, require_fuse, require_root

pytestmark = [pytest.mark.root]

PROBE = textwrap.dedent("""
    import fcntl, os, sys
    path, what = sys.argv[1], sys.argv[2]
    if what == "lock":
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("locked", flush=True)
        sys.stdin.read()          # hold it until the test closes our stdin
    else:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            os.pwrite(fd, b"x", 0)
            os.fsync(fd)
            print("written")
        except OSError as exc:
            print(exc.strerror)
""")


@pytest.fixture
def view():
    require_root()
    require_binary("unshare")
    require_fuse()
    require_binary("nsenter")
    tmp = Path(tempfile.mkdtemp(prefix="hvst"))
    (tmp / "shared").mkdir()
    st = HostStorage("h1", tmp / "shared", tmp / "h1")
    try:
        st.start()
        yield st
    finally:
        st.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def in_view(st: HostStorage, what: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(["nsenter", f"--mount={st.mntns}", "--", sys.executable, "-c", PROBE,
                             str(st.shared / "lease"), what], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                            text=True, **kw)


def test_the_view_is_one_hosts_only_and_passes_flock_through(view):
    assert str(view.shared) not in Path("/proc/self/mounts").read_text()
    holder = in_view(view, "lock")
    try:
        assert holder.stdout.readline().strip() == "locked"
        fd = os.open(view.shared / "lease", os.O_RDWR)      # the real file, as the other host sees it
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder.stdin.close()
            holder.wait(10)
            # Free once the view's holder is gone: FUSE sends the unlock of a closed file
            # after the process has exited (the release is asynchronous), so poll for it.
            wait_for(lambda: _try_lock(fd), 10, what="the lock to be released through the view")
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait(10)


def test_the_switches_fail_or_block_writes_through_the_view_only(view):
    assert in_view(view, "write").communicate(timeout=20)[0].strip() == "written"
    view.unwritable("erofs")
    assert in_view(view, "write").communicate(timeout=20)[0].strip() == "Read-only file system"
    (view.shared / "other").write_text("the real directory still takes writes")
    view.writable()
    view.freeze()
    stuck = in_view(view, "write")
    with pytest.raises(subprocess.TimeoutExpired):
        stuck.communicate(timeout=1.5)
    view.thaw()
    assert stuck.communicate(timeout=20)[0].strip() == "written"


def ns_users(ino: int) -> list[int]:
    users = []
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and os.stat(f"/proc/{p}/ns/mnt").st_ino == ino:
                users.append(int(p))
        except OSError:
            pass                                  # gone meanwhile
    return users


def test_close_leaves_no_process_and_no_mount():
    require_root()
    require_fuse()
    tmp = Path(tempfile.mkdtemp(prefix="hvst"))
    (tmp / "shared").mkdir()
    st = HostStorage("h1", tmp / "shared", tmp / "h1").start()
    try:
        ns = os.stat(st.mntns).st_ino
        pids = [st.keeper.pid, st.fuse.pid]
        assert set(pids) <= set(ns_users(ns))
        st.freeze()                               # even a frozen view goes
    finally:
        st.close()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert ns_users(ns) == []                     # the namespace, and with it the mounts, is gone
    assert "fuse" not in subprocess.run(["findmnt", "-n", "-o", "FSTYPE", str(tmp / "shared")],
                                        capture_output=True, text=True).stdout
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
