"""Run a havip daemon inside a lab host and follow what it says.

The daemon's JSON log is the contract: every transition line carries from, to and the
reason sentence, and tests assert on those sentences.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from havip.lab.netns import Host, wait_for


def havip_argv() -> list[str]:
    """The havip entry point of the interpreter running us (the project's venv)."""
    return [sys.executable, "-m", "havip.cli"]


class Havipd:
    """One `havip run` process in a lab host."""

    def __init__(self, host: Host, config: dict, workdir: Path, name: str | None = None):
        self.host = host
        self.name = name or host.name
        self.config = dict(config)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.setdefault("instance", self.name)
        self.config.setdefault("control", {"socket": str(self.workdir / f"{self.name}.sock")})
        self.conf_path = self.workdir / f"{self.name}.yaml"
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self._offset = 0
        self._events: list[dict] = []

    def write_config(self) -> Path:
        self.conf_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return self.conf_path

    def start(self, extra_env: dict | None = None, wrapper: list[str] | None = None) -> "Havipd":
        """Start `havip run`; `wrapper` (e.g. setpriv ... --) is put before it."""
        self.write_config()
        env = {**os.environ, **(extra_env or {})}
        log = open(self.log_path, "ab")
        self.proc = self.host.popen([*(wrapper or []), *havip_argv(), "run", "-c", str(self.conf_path), "--log-format", "json",
                                     "--log-level", "debug"], stdout=log, stderr=log, env=env)
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the daemon resigns (priority 0) and cleans up."""
        if not self.running:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: leaves its VIP and container behind, as a crash would."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def cleanup(self) -> subprocess.CompletedProcess:
        """`havip cleanup -c FILE`, as systemd's ExecStopPost= runs it."""
        return self.host.run(*havip_argv(), "cleanup", "-c", str(self.conf_path), check=False, timeout=120)

    # ------------------------------------------------------------------ the log

    def events(self) -> list[dict]:
        """All JSON log lines so far (non-JSON lines are kept as {"raw": line})."""
        if not self.log_path.exists():
            return self._events
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self._offset += cut
        for line in data[:cut].decode(errors="replace").splitlines():
            try:
                self._events.append(json.loads(line))
            except json.JSONDecodeError:
                self._events.append({"raw": line})
        return self._events

    def transitions(self) -> list[dict]:
        return [e for e in self.events() if e.get("event") == "transition"]

    def state(self) -> str | None:
        t = self.transitions()
        return t[-1]["to"] if t else None

    def wait_state(self, state: str, timeout: float = 30, after: int = 0) -> dict:
        """Wait for a transition to `state` (among transitions after index `after`)."""
        def found():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"havip on {self.name} exited with {self.proc.returncode}: {self.tail()}")
            for t in self.transitions()[after:]:
                if t["to"] == state:
                    return t
            return None
        return wait_for(found, timeout, what=f"{self.name} to become {state} (log: {self.tail()})")

    def wait_event(self, predicate, timeout: float = 30, what: str = "event") -> dict:
        def found():
            for e in self.events():
                if predicate(e):
                    return e
            return None
        return wait_for(found, timeout, what=f"{self.name}: {what}")

    def tail(self, n: int = 15) -> str:
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines)


# The lab pair's shared beacon key (a lab is throwaway; real hosts use beacon.key_file).
LAB_BEACON_KEY = "havip-lab-beacon-key-not-secret"


def vrrp_config(*, vrid: int = 51, priority: int, vips: list[str], version: int = 2,
                interval: float = 1, password: str | None = "1111", **extra) -> dict:
    """A havip config for lab host `eth0` in the classic pair's shape, beacon signed.

    Sub-second timers get `realtime_priority: 10`, as `check-config` advises an operator:
    the lab shares 2 cores with whatever else runs, and a loop kept off the CPU for 3
    intervals (0.3 s at 0.1 s) loses mastership."""
    cfg = {"interface": "eth0", "virtual_router_id": vrid, "priority": priority, "version": version,
           "advert_interval": interval, "virtual_ipaddresses": vips,
           "realtime_priority": 10 if interval < 1 else 0,
           "garp": {"delay": 0, "repeat": 2, "interval": 0.05, "refresh": 0},
           "beacon": {"keys": [LAB_BEACON_KEY]}}
    if version == 2 and password:
        cfg["authentication"] = {"type": "pass", "password": password}
    cfg.update(extra)
    return cfg


def wait_vip(hosts: list[Host], vip: str, timeout: float = 30) -> Host:
    """Wait until exactly one host holds `vip`; return it."""
    def one():
        holders = [h for h in hosts if h.has_address(vip)]
        return holders[0] if len(holders) == 1 else None
    return wait_for(one, timeout, what=f"exactly one holder of {vip}")


def holders(hosts: list[Host], vip: str) -> list[str]:
    return [h.name for h in hosts if h.has_address(vip)]


def now() -> float:
    return time.monotonic()
