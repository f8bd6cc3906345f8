"""The one adapter to nginx: test a config, start, reload, reopen logs, stop.

nginx runs with its own prefix (`nginx.prefix`): the rendered config, pid file, logs
and temp paths all live under it, so the pool never touches /etc/nginx or another
nginx on the host. A config is written to `nginx.conf.new`, checked with
`nginx -t -c FILE -p PREFIX`, and only then moved over `nginx.conf` and applied with
`nginx -s reload`: a broken render is never applied. Every call has a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from havip.errors import AdapterError

CALL_TIMEOUT = 10.0


class NginxInvalid(AdapterError):
    """`nginx -t` refused a rendered config; str() is nginx's own complaint."""


class Nginx:
    def __init__(self, binary: str, prefix: str | Path):
        self.binary = binary
        self.prefix = Path(prefix)
        self.conf = self.prefix / "nginx.conf"
        self.pid_file = self.prefix / "nginx.pid"

    def prepare(self) -> None:
        """Create the prefix's directories (logs, temp paths)."""
        for sub in ("logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.binary, *args, "-p", f"{self.prefix}/"], capture_output=True, text=True,
                                  timeout=CALL_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AdapterError(f"{self.binary} {' '.join(args)}: {exc}") from None

    def test(self, path: str | Path) -> None:
        """`nginx -t` on `path`; raises NginxInvalid with nginx's message."""
        proc = self._run("-t", "-q", "-c", str(path))
        if proc.returncode != 0:
            lines = [ln.removeprefix("nginx: ") for ln in (proc.stderr or proc.stdout).splitlines()
                     if ln.strip() and "test failed" not in ln]
            raise NginxInvalid("; ".join(lines) or f"nginx -t exited {proc.returncode}")

    def install(self, text: str) -> None:
        """Write `text` as the config if nginx accepts it; the old one stays otherwise."""
        self.prepare()
        new = self.conf.with_name("nginx.conf.new")
        new.write_text(text)
        self.test(new)
        os.replace(new, self.conf)

    def pid(self) -> int | None:
        """The master's pid if the pid file names a live nginx, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"nginx" in cmd else None

    def start(self) -> int:
        """Start the master (it daemonizes; a bind failure is reported here); its pid."""
        proc = self._run("-c", str(self.conf))
        if proc.returncode != 0:
            raise AdapterError(f"nginx did not start: {(proc.stderr or proc.stdout).strip()[:500]}")
        deadline = time.monotonic() + CALL_TIMEOUT
        while (pid := self.pid()) is None:
            if time.monotonic() > deadline:
                raise AdapterError(f"nginx started but wrote no pid to {self.pid_file}")
            time.sleep(0.02)
        return pid

    def reload(self) -> None:
        proc = self._run("-s", "reload", "-c", str(self.conf))
        if proc.returncode != 0:
            raise AdapterError(f"nginx -s reload failed: {(proc.stderr or proc.stdout).strip()[:500]}")

    def reopen(self) -> None:
        """Reopen the logs (after the access log was moved aside)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGUSR1)

    def stop(self, grace: float = 10.0) -> None:
        """Graceful quit (in-flight requests finish), SIGTERM after `grace` seconds."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + grace
        while self.pid() == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid() == pid:
            os.kill(pid, signal.SIGTERM)
