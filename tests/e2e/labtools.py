"""What the e2e modules on a MilvusLab share: a lab of their own removed by its ids even
on failure, the advert sniffer, the lease record, and a watch of a Milvus by its pid
(for an engine that is frozen and cannot be asked)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from havip.lab.milvuslab import HAVIP_HOSTS, MilvusLab
from havip.runtime.lease import StorageLease
from tests.conftest import require_binary, require_root


@contextlib.contextmanager
def own_lab(letters: str, up: bool = False, settings: dict | None = None, **kw) -> Iterator[MilvusLab]:
    """A MilvusLab under a fresh /tmp directory with prefix `letters` + random hex, built
    (and `up` if asked; `settings` over havip's `milvus:` timings). Teardown by the lab's own ids: frozen pids (`lab.frozen`) get
    SIGCONT, links come back up, extra processes (`lab.extra_procs`) are killed, running
    Milvus containers killed (no stop grace to wait for), then `down()`."""
    require_root()
    require_binary("dockerd")
    workdir = tempfile.mkdtemp(prefix=letters, dir="/tmp")     # short: containerd's socket paths
    lab = MilvusLab(f"{workdir}/lab", prefix=letters + secrets.token_hex(2), **kw)
    lab.extra_procs = []
    lab.frozen = []
    lab.settings = dict(settings or {})
    try:
        lab.up() if up else lab.build()
        yield lab
    finally:
        for pid in lab.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for name in HAVIP_HOSTS:
            if name in lab.hosts:
                with contextlib.suppress(Exception):
                    lab.hosts[name].link_up()
        for proc in lab.extra_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        lab.kill_milvus()
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


def sniff(lab: MilvusLab) -> subprocess.Popen:
    """Record the adverts on the bridge from the client namespace until SIGINT."""
    proc = lab.hosts["client"].popen([sys.executable, "-m", "havip.lab.sniff", "eth0", "600"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lab.extra_procs.append(proc)
    assert proc.stderr.readline().strip() == "listening"
    return proc


def adverts(proc: subprocess.Popen) -> list[tuple[float, str, int]]:
    """The sniffer's adverts as (wall time, source, priority)."""
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    offset = time.time() - time.monotonic()
    return [(t + offset, src, prio) for t, src, prio in json.loads(out)]


def lease_holder(lab: MilvusLab) -> tuple[str | None, str | None]:
    """(holder, state) of the lease record on the shared directory, read without the lock."""
    st = StorageLease(str(lab.shared / ".havip-lease"), "e2e-reader").status()
    return st.get("holder"), st.get("state")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Watch:
    """h2's container (its engine answers) against h1's Milvus by pid (its engine may not):
    every 0.1 s, the times both ran, the VIP holders, and any extra check (`also`)."""

    def __init__(self, lab: MilvusLab, milvus_pid: int, also=None):
        self.lab, self.milvus_pid, self.also = lab, milvus_pid, also
        self.overlaps: list[float] = []
        self.vip_states: set[tuple[str, ...]] = set()

    def __call__(self, seconds: float, until=None) -> None:
        """Watch for `seconds`, or until `until()` holds."""
        end = time.time() + seconds
        while time.time() < end:
            if self.lab.container_running("h2") and alive(self.milvus_pid):
                self.overlaps.append(time.time())
            self.vip_states.add(tuple(self.lab.vip_holders()))
            if self.also is not None:
                self.also()
            if until is not None and until():
                return
            time.sleep(0.1)
