"""Debian's keepalived (2.2.7) inside a lab host's namespace: the reference havip must
interoperate with, and the thing it replaces.

keepalived runs in the foreground (`--dont-fork`) as a parent process that starts one
VRRP child. Every file it writes (config, pid files, log) is named after the host's
namespace, and `--config-id` is that name too, so instances of parallel tests never
share a file. Signals go to the pids keepalived wrote, never to a process name.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
from pathlib import Path

from havip.lab.netns import Host, wait_for

KEEPALIVED = "/usr/sbin/keepalived"


def render_conf(*, vrid: int, priority: int, vips: list[str], interface: str = "eth0",
                advert_int: float = 1, version: int = 2, auth_pass: str | None = None,
                unicast_src: str | None = None, unicast_peers: tuple[str, ...] | list[str] = (),
                nopreempt: bool = False, state: str = "BACKUP", instance: str = "VI_1",
                router_id: str = "havip-lab", garp_master_delay: int | None = None,
                rt_priority: int | None = None) -> str:
    """A keepalived.conf with one vrrp_instance, e.g. the HA seed's:
    render_conf(vrid=51, priority=110, vips=["198.18.0.50/24"], auth_pass="1111").
    `rt_priority`: the VRRP child at SCHED_RR (global_defs vrrp_rt_priority), as havip's
    realtime_priority puts its loop."""
    if nopreempt and state != "BACKUP":
        raise ValueError("keepalived honours nopreempt only with state BACKUP")
    lines = ["global_defs {", f"  router_id {router_id}",
             *([f"  vrrp_rt_priority {rt_priority}"] if rt_priority else []), "}",
             f"vrrp_instance {instance} {{",
             f"  state {state}",
             f"  interface {interface}",
             f"  version {version}",
             f"  virtual_router_id {vrid}",
             f"  priority {priority}",
             f"  advert_int {advert_int:g}"]
    if nopreempt:
        lines.append("  nopreempt")
    if garp_master_delay is not None:
        lines.append(f"  garp_master_delay {garp_master_delay}")
    if auth_pass is not None:
        lines += ["  authentication {", "    auth_type PASS", f"    auth_pass {auth_pass}", "  }"]
    if unicast_src:
        lines.append(f"  unicast_src_ip {unicast_src}")
    if unicast_peers:
        lines += ["  unicast_peer {", *(f"    {p}" for p in unicast_peers), "  }"]
    lines += ["  virtual_ipaddress {", *(f"    {ipaddress.ip_interface(v)}" for v in vips), "  }", "}"]
    return "\n".join(lines) + "\n"


def pid_alive(pid: int | None) -> bool:
    """True if `pid` is a live process (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _signal(pid: int | None, sig: int) -> None:
    if pid_alive(pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Keepalived:
    """One keepalived process tree in `host`'s namespace."""

    def __init__(self, host: Host, conf_text: str, workdir: Path, *, binary: str = KEEPALIVED):
        self.host = host
        self.conf_text = conf_text
        self.binary = binary
        self.config_id = host.ns
        base = Path(workdir) / f"keepalived-{host.ns}"
        self.conf_path = base.with_suffix(".conf")
        self.pid_path = base.with_suffix(".pid")
        self.vrrp_pid_path = base.with_suffix(".vrrp.pid")
        self.log_path = base.with_suffix(".log")
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None          # the parent, as keepalived wrote it
        self.vrrp_pid: int | None = None     # the VRRP child

    # ------------------------------------------------------------------ lifecycle

    def check(self) -> None:
        """`keepalived --config-test`: raise RuntimeError with its output if it objects."""
        self.conf_path.parent.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.conf_text)
        res = self.host.run(self.binary, "--config-test", "-f", str(self.conf_path),
                            "-i", self.config_id, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"keepalived rejects {self.conf_path}:\n{res.stdout}{res.stderr}")

    def argv(self) -> list[str]:
        return [self.binary, "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
                "--vrrp", "--dont-respawn",
                "--use-file", str(self.conf_path), "--config-id", self.config_id,
                "--pid", str(self.pid_path), "--vrrp_pid", str(self.vrrp_pid_path)]

    def start(self, timeout: float = 10.0) -> "Keepalived":
        """Start keepalived and wait until its VRRP child is up (its pid file exists)."""
        if self.running:
            raise RuntimeError(f"keepalived in {self.host.ns} is already running (pid {self.pid})")
        self.check()
        for p in (self.pid_path, self.vrrp_pid_path):
            p.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = self.host.popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT)

        def started() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keepalived in {self.host.ns} exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            return _read_pid(self.pid_path) is not None and _read_pid(self.vrrp_pid_path) is not None

        wait_for(started, timeout, what=f"keepalived to start in {self.host.ns}")
        self.pid = _read_pid(self.pid_path)
        self.vrrp_pid = _read_pid(self.vrrp_pid_path)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, as systemd does: keepalived sends priority-0 adverts and removes its
        VIPs. SIGKILL if it has not exited within `timeout` seconds."""
        if self.proc is None:
            return
        _signal(self.pid or self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._wait_gone(timeout)

    def kill(self) -> None:
        """SIGKILL, a crash: no priority-0 advert, the VIP stays on the interface.

        The parent is frozen first: it would otherwise notice its child's death and
        shut down cleanly, and the child killed first cannot send anything."""
        if self.proc is None:
            return
        parent = self.pid or self.proc.pid
        _signal(parent, signal.SIGSTOP)
        _signal(self.vrrp_pid, signal.SIGKILL)
        _signal(parent, signal.SIGKILL)
        self.proc.wait(10)
        self._wait_gone(10)

    def _wait_gone(self, timeout: float) -> None:
        wait_for(lambda: not any(pid_alive(p) for p in self.pids), timeout,
                 what=f"keepalived processes {self.pids} in {self.host.ns} to exit")

    # ------------------------------------------------------------------ inspection

    @property
    def pids(self) -> list[int]:
        return [p for p in (self.pid, self.vrrp_pid) if p]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and pid_alive(self.vrrp_pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, text: str, timeout: float = 10.0, *, after: int = 0) -> str:
        """Wait until the log (from character `after` on) contains `text`; return the line."""
        def found():
            return next((ln for ln in self.log()[after:].splitlines() if text in ln), None)
        try:
            return wait_for(found, timeout, what=f"{text!r} in the keepalived log of {self.host.ns}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def __enter__(self) -> "Keepalived":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None

