"""Reading small files that may not be what they claim: configurations, keepalived.conf,
the scripts it names."""

from __future__ import annotations

import errno
import os
import stat

_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind(mode: int) -> str:
    """What a file of this st_mode is, for a message: 'a FIFO', 'a directory', ..."""
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def read_bounded(path: str | os.PathLike, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the regular file at `path` (more than `limit`: too large).

    Anything but a regular file raises OSError whose strerror names it: a FIFO would wait
    for a writer forever (opened non-blocking, it is only looked at), /dev/zero never ends.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except ValueError:
        raise OSError(errno.EINVAL, "NUL byte in the file name") from None
    with open(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file ({kind(mode)})")
        return f.read(limit + 1)
