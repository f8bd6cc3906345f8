"""Each lab host's own view of the shared storage, so that a fault can hit one host only.

The lab's hosts are network namespaces that share the machine's one mount namespace: a
read-only remount or a hung mount of the shared directory would hit both. `HostStorage`
gives a host a mount namespace of its own (`unshare --mount --propagation private`, kept
alive by its `sleep` process), in which:

- the real shared directory is bind-mounted at `WORKDIR/HOST/backing` (seen only there);
- a FUSE passthrough (havip.lab.fusefs, run in that namespace) shows it at the lab's
  shared path, the one havip's `data_path`, its lease and the container's /data use.

The host's dockerd and havip run in that namespace too (Host.mntns: `nsenter --mount=...
--net=...`), and so do the containers their dockerd starts. The root namespace and the
other host still see the real directory. Faults, on this host alone:

- `unwritable("erofs"|"eio")`: writes fail (a read-only remount, or an NFS client that
  lost its server); `writable()` ends it;
- `freeze()`: SIGSTOP of the FUSE server: every access blocks (a hung NFS server);
  `thaw()` ends it.

A read-only remount of a bind mount itself is refused (EBUSY) while files are open for
writing on it, as havip's lease is: hence the FUSE switch rather than `mount -o remount,ro`.

`close()` thaws, then kills the FUSE server and the keeper by their pids; the mounts
exist only in the namespace, which the kernel removes with its last process (the host's
dockerd, containers and havip are stopped first by the lab). Nothing is mounted in the
root namespace, so nothing is left there even if a step fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from havip.lab.netns import wait_for

SWITCH_DELAY = 0.05      # the FUSE server reads its mode file every 5 ms


class HostStorage:
    def __init__(self, name: str, shared: Path, workdir: Path):
        self.name = name
        self.shared = Path(shared)             # the lab's shared path: real here, the view in the namespace
        self.workdir = Path(workdir)
        self.backing = self.workdir / "backing"
        self.modefile = self.workdir / "storage-mode"
        self.keeper: subprocess.Popen | None = None
        self.fuse: subprocess.Popen | None = None
        self.frozen = False

    @property
    def mntns(self) -> str:
        assert self.keeper is not None, "start() first"
        return f"/proc/{self.keeper.pid}/ns/mnt"

    def _in_ns(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--mount={self.mntns}", f"--wd={os.getcwd()}", "--", *argv]

    def start(self, timeout: float = 20) -> "HostStorage":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.backing.mkdir(exist_ok=True)
        self.modefile.write_text("ok\n")
        self.keeper = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "infinity"],
                                       start_new_session=True)
        root = os.stat("/proc/self/ns/mnt").st_ino
        wait_for(lambda: self.keeper.poll() is None and os.stat(self.mntns).st_ino != root, 10,
                 what=f"{self.name}'s mount namespace")
        subprocess.run(self._in_ns(["mount", "--bind", str(self.shared), str(self.backing)]), check=True,
                       capture_output=True, text=True)
        log = open(self.workdir / "fuse.log", "ab")
        try:
            self.fuse = subprocess.Popen(self._in_ns([sys.executable, "-m", "havip.lab.fusefs", str(self.backing),
                                                      str(self.shared), str(self.modefile)]),
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

        def mounted() -> bool:
            if self.fuse.poll() is not None:
                raise RuntimeError(f"the FUSE view of {self.name} exited: "
                                   f"{(self.workdir / 'fuse.log').read_text(errors='replace')[-500:]}")
            out = subprocess.run(self._in_ns(["findmnt", "-n", "-o", "FSTYPE", str(self.shared)]),
                                 capture_output=True, text=True).stdout
            return "fuse" in out
        wait_for(mounted, timeout, interval=0.05, what=f"the FUSE view of {self.name}")
        return self

    # ------------------------------------------------------------------ faults

    def unwritable(self, how: str = "erofs") -> float:
        """Writes fail from now on (the server sees it within 5 ms, and we return after
        SWITCH_DELAY); returns the wall time of the switch."""
        if how not in ("erofs", "eio"):
            raise ValueError(f"how: {how!r}: must be erofs or eio")
        at = time.time()
        self.modefile.write_text(how + "\n")
        time.sleep(SWITCH_DELAY)          # in force when we return
        return at

    def writable(self) -> None:
        self.modefile.write_text("ok\n")
        time.sleep(SWITCH_DELAY)

    def freeze(self) -> float:
        """Every access blocks from now on; returns the wall time of the switch."""
        at = time.time()
        os.kill(self.fuse.pid, signal.SIGSTOP)
        self.frozen = True
        return at

    def thaw(self) -> None:
        if self.fuse is not None and self.fuse.poll() is None:
            os.kill(self.fuse.pid, signal.SIGCONT)
        self.frozen = False

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Thaw, then end the FUSE server and the keeper, by pid (call it after the host's
        dockerd and havip are stopped: the namespace and its mounts go with its last process)."""
        if self.fuse is not None:
            self.thaw()
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                if self.fuse.poll() is None:
                    try:
                        os.kill(self.fuse.pid, sig)
                        self.fuse.wait(wait)
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        pass
        if self.keeper is not None and self.keeper.poll() is None:
            self.keeper.kill()
            self.keeper.wait(5)

    def pids(self) -> dict:
        return {"keeper": self.keeper.pid if self.keeper else None, "fuse": self.fuse.pid if self.fuse else None}
