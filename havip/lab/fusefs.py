"""A FUSE passthrough of the lab's shared directory with fault switches: one host's view.

    python -m havip.lab.fusefs BACKING MOUNTPOINT MODEFILE

Run inside a lab host's own mount namespace (havip.lab.storage), it shows BACKING (the
real shared directory) at MOUNTPOINT to that host alone, so a fault hits one host only:

- *unwritable*: MODEFILE holds `erofs` (or `eio`): every write, create, truncate, fsync
  and open for writing fails with EROFS (a read-only remount) or EIO (an NFS client that
  lost its server); `ok` puts it back. Read within 5 ms.
- *hung*: SIGSTOP of this process (the caller's switch): requests queue in the kernel and
  every access blocks, as on a hard-mounted NFS whose server is gone; SIGCONT resumes. A
  process killed meanwhile is freed, as on NFS (a request not yet read is abandoned).

flock() is passed through to BACKING (libfuse 2.9's `flock` operation, which fusepy 3.0.1
does not declare: added below), so the lease's lock taken through one host's view excludes
the other host's, as an NFS server's lock would. Without it the kernel would keep flocks
per mount and both hosts would hold the lease.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import sys
import threading
import time

import fuse  # fusepy (lab only; libfuse2)

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


class _Ops(ctypes.Structure):
    """libfuse 2.9's struct fuse_operations up to `flock` (fusepy stops at `ioctl`)."""

    _fields_ = [*fuse.fuse_operations._fields_,
                ("poll", ctypes.c_void_p), ("write_buf", ctypes.c_void_p), ("read_buf", ctypes.c_void_p),
                ("flock", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(fuse.fuse_file_info),
                                           ctypes.c_int)),
                ("fallocate", ctypes.c_void_p)]


class _Fuse(fuse.FUSE):
    def flock(self, path, fip, op):
        return self.operations("flock", self._decode_optional_path(path), fip.contents.fh, op)


class Passthrough(fuse.Operations):
    def __init__(self, backing: str, modefile: str):
        self.backing = backing
        self.modefile = modefile
        self.mode = "ok"
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            try:
                with open(self.modefile) as f:
                    self.mode = f.read().strip() or "ok"
            except OSError:
                self.mode = "ok"
            time.sleep(0.005)

    def _p(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _writing(self) -> None:
        if self.mode == "erofs":
            raise fuse.FuseOSError(errno.EROFS)
        if self.mode == "eio":
            raise fuse.FuseOSError(errno.EIO)

    # reading
    def getattr(self, path, fh=None):
        st = os.fstat(fh) if fh is not None else os.lstat(self._p(path))
        return {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime",
                                             "st_mtime", "st_ctime", "st_ino", "st_dev", "st_blocks")}

    def access(self, path, amode):
        if not os.access(self._p(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        if amode & os.W_OK:
            self._writing()

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self._p(path))]

    def readlink(self, path):
        return os.readlink(self._p(path))

    def statfs(self, path):
        st = os.statvfs(self._p(path))
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                                             "f_files", "f_flag", "f_frsize", "f_namemax")}

    def open(self, path, flags):
        if flags & WRITE_FLAGS:
            self._writing()
        return os.open(self._p(path), flags)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)            # drops a flock taken through this descriptor
        return 0

    def flock(self, path, fh, op):
        fcntl.flock(fh, op)
        return 0

    # writing
    def create(self, path, mode, fi=None):
        self._writing()
        return os.open(self._p(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def write(self, path, data, offset, fh):
        self._writing()
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        self._writing()
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._p(path), length)

    def fsync(self, path, datasync, fh):
        self._writing()
        (os.fdatasync if datasync else os.fsync)(fh)
        return 0

    def chmod(self, path, mode):
        self._writing()
        os.chmod(self._p(path), mode)

    def chown(self, path, uid, gid):
        self._writing()
        os.lchown(self._p(path), uid, gid)

    def mkdir(self, path, mode):
        self._writing()
        os.mkdir(self._p(path), mode)

    def mknod(self, path, mode, dev):
        self._writing()
        os.mknod(self._p(path), mode, dev)

    def rmdir(self, path):
        self._writing()
        os.rmdir(self._p(path))

    def unlink(self, path):
        self._writing()
        os.unlink(self._p(path))

    def symlink(self, target, source):
        self._writing()
        os.symlink(source, self._p(target))

    def link(self, target, source):
        self._writing()
        os.link(self._p(source), self._p(target))

    def rename(self, old, new):
        self._writing()
        os.rename(self._p(old), self._p(new))

    def utimens(self, path, times=None):
        self._writing()
        os.utime(self._p(path), times)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m havip.lab.fusefs BACKING MOUNTPOINT MODEFILE", file=sys.stderr)
        return 2
    backing, mountpoint, modefile = argv
    fuse.fuse_operations = _Ops          # FUSE() builds the struct libfuse reads from this name
    _Fuse(Passthrough(backing, modefile), mountpoint, foreground=True, nothreads=False, fsname="havip-lab")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
