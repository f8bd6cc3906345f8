"""Requests routed per member, counted from nginx's access log.

The rendered `log_format havip_pool` writes `$msec $uri $upstream_addr $status
$sent_trailer_grpc_status $request_time`. `$upstream_addr` lists every member a request
was sent to ("a:1, b:2" when the first failed and the read was retried), so a line
counts one request for the member that answered last and one retry against each
earlier one. `-` is a read answered by nginx itself (UNAVAILABLE: no healthy member).
`parse_line` is pure; `Tail` reads what was appended since the last call, and moves
the log aside (and has nginx reopen it) when it grows past `max_bytes`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Counts:
    served: Counter = field(default_factory=Counter)      # address -> requests it answered
    retried: Counter = field(default_factory=Counter)     # address -> requests it failed, sent elsewhere
    local: int = 0                                        # answered by nginx itself (no upstream)
    lines: int = 0
    bad_lines: int = 0


def parse_line(line: str, counts: Counts) -> None:
    parts = line.rstrip("\n").split(" ")
    if len(parts) < 6:
        counts.bad_lines += 1
        return
    # $upstream_addr holds ", " between addresses (and " : " across internal redirects).
    addrs_text = " ".join(parts[2:-3])
    addrs = [a.strip() for a in addrs_text.replace(" : ", ", ").split(",") if a.strip()]
    counts.lines += 1
    if not addrs or addrs == ["-"]:
        counts.local += 1
        return
    for a in addrs[:-1]:
        counts.retried[a] += 1
    counts.served[addrs[-1]] += 1


class Tail:
    def __init__(self, path: str | Path, *, reopen: Callable[[], None] | None = None,
                 max_bytes: int = 64 * 1024 * 1024):
        self.path = Path(path)
        self.reopen = reopen
        self.max_bytes = max_bytes
        self.counts = Counts()
        self._ino: int | None = None
        self._offset = 0
        self._partial = ""

    def skip_existing(self) -> None:
        """Count only what is logged from now on."""
        try:
            st = self.path.stat()
            self._ino, self._offset = st.st_ino, st.st_size
        except OSError:
            pass

    def poll(self) -> Counts:
        try:
            st = self.path.stat()
        except OSError:
            return self.counts
        if st.st_ino != self._ino or st.st_size < self._offset:
            self._ino, self._offset, self._partial = st.st_ino, 0, ""      # new or truncated file
        if st.st_size > self._offset:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read(st.st_size - self._offset)
            self._offset += len(data)
            text = self._partial + data.decode("utf-8", "replace")
            *lines, self._partial = text.split("\n")
            for line in lines:
                if line:
                    parse_line(line, self.counts)
        if self.reopen is not None and self._offset > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self.reopen()
            self._ino, self._offset = None, 0
        return self.counts
