"""Network namespaces for tests, the lab and benchmarks.

A `Topology` is a set of hosts, each in its own network namespace with one interface
`eth0`, joined by veth pairs to a Linux bridge that lives in a namespace of its own
(the "switch"). Nothing touches the root namespace's interfaces. Everything is named
with the topology's prefix and removed by `close()`, which kills only processes that
live inside our own namespaces.

Addresses come from 198.18.0.0/15 and fd00:198:18::/48 (benchmarking ranges).
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")


class CommandFailed(subprocess.CalledProcessError):
    """A command the lab ran failed; its message carries the command's own stderr."""

    def __str__(self) -> str:
        said = " ".join(str(self.stderr or self.stdout or "").split()) or "(no output)"
        return f"`{shlex.join(str(a) for a in self.cmd)}` exited with status {self.returncode}: {said}"


def run(argv: list[str], *, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with output captured as text; a failure raises CommandFailed."""
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise CommandFailed(res.returncode, argv, res.stdout, res.stderr)
    return res


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["ip", *args], check=check)


def ns_pids(ns: str) -> list[int]:
    """Processes whose network namespace is `ns` (ours by construction)."""
    out = _ip("netns", "pids", ns, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def ns_exec_argv(ns: str, argv: list[str], mntns: str | None = None) -> list[str]:
    """argv that runs in `ns`. nsenter keeps /sys and the cgroup mounts (dockerd needs them).
    With `mntns` (a host's own mount namespace, havip.lab.storage) it enters that too, in
    the current directory (entering a mount namespace would otherwise move it to /)."""
    if mntns:
        return ["nsenter", f"--net={NETNS_DIR / ns}", f"--mount={mntns}", f"--wd={os.getcwd()}", "--", *argv]
    return ["nsenter", f"--net={NETNS_DIR / ns}", "--", *argv]


@dataclass
class Host:
    """One host: a namespace with `eth0` on the switch."""

    name: str
    ns: str
    ipv4: str                       # "198.18.0.11/24"
    ipv6: str | None                # "fd00:198:18::11/64"
    port: str                       # the switch-side veth
    topo: "Topology" = field(repr=False)
    mntns: str | None = None        # its own mount namespace (/proc/PID/ns/mnt), else the machine's

    @property
    def addr(self) -> str:
        return self.ipv4.split("/")[0]

    @property
    def addr6(self) -> str | None:
        return self.ipv6.split("/")[0] if self.ipv6 else None

    def run(self, *argv: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """Run a command in this host's namespace and wait for it."""
        return run(ns_exec_argv(self.ns, list(argv), self.mntns), check=check, timeout=timeout, **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start a long-running command in this host's namespace; close() reaps it."""
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(ns_exec_argv(self.ns, argv, self.mntns), **kw)
        self.topo.procs.append(proc)
        return proc

    def addresses(self, dev: str = "eth0") -> list[str]:
        """Addresses on `dev`, as "ip/prefix" strings."""
        out = self.run("ip", "-o", "addr", "show", "dev", dev, check=False).stdout
        res = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[2] in ("inet", "inet6"):
                res.append(parts[3])
        return res

    def has_address(self, ip: str, dev: str = "eth0") -> bool:
        return any(a.split("/")[0] == ip for a in self.addresses(dev))

    def cut(self) -> None:
        """Isolate the host: detach its port from the bridge. The host keeps its carrier
        and does not know it is alone, as when a switch port or an uplink fails."""
        self.topo.sw("ip", "link", "set", self.port, "nomaster")

    def restore(self) -> None:
        self.topo.sw("ip", "link", "set", self.port, "master", "br0")

    def isolate(self, on: bool = True) -> None:
        """Bridge port isolation: isolated ports cannot reach each other, only the others.
        Isolating two hosts splits their brain: both keep their carrier and the client,
        neither hears the other's adverts."""
        self.topo.sw("bridge", "link", "set", "dev", self.port, "isolated", "on" if on else "off")

    def link_down(self) -> None:
        """Take the switch side down: the host sees NO-CARRIER on eth0 (cable pulled)."""
        self.topo.sw("ip", "link", "set", self.port, "down")

    def link_up(self) -> None:
        self.topo.sw("ip", "link", "set", self.port, "up")


class Topology:
    """Hosts on one bridge, each in its own namespace. Use as a context manager."""

    def __init__(self, prefix: str | None = None, *, subnet4: str = "198.18.0", subnet6: str = "fd00:198:18:"):
        # Short random prefix: interface names are limited to 15 characters.
        self.prefix = prefix or ("hv" + secrets.token_hex(2))
        self.subnet4 = subnet4
        self.subnet6 = subnet6
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self.procs: list[subprocess.Popen] = []
        self._namespaces: list[str] = []
        self._cleanups: list = []
        try:
            self._create_ns(self.switch)
            self.sw("ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
            # No multicast snooping: VRRP multicast must reach every port at once.
            self.sw("ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
            self.sw("ip", "link", "set", "br0", "up")
        except BaseException:
            self.close()                    # the caller never gets a handle to close
            raise

    # ------------------------------------------------------------------ building

    def _create_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)             # fails if the name is taken: never adopt another's
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        # IPv6 DAD would delay addresses by a second or more; duplicate detection is
        # not what these tests are about.
        for key in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
            subprocess.run(ns_exec_argv(ns, ["sysctl", "-qw", key]), check=False, capture_output=True)

    def sw(self, *argv: str) -> subprocess.CompletedProcess:
        return run(ns_exec_argv(self.switch, list(argv)))

    def add_host(self, name: str, index: int, *, ipv6: bool = True) -> Host:
        """Add host `name` with address SUBNET.index/24 (and fd00:198:18::index/64)."""
        ns = f"{self.prefix}-{name}"
        self._create_ns(ns)
        port = f"{self.prefix}p{index}"
        _ip("link", "add", port, "netns", self.switch, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.sw("ip", "link", "set", port, "master", "br0")
        self.sw("ip", "link", "set", port, "up")
        ipv4 = f"{self.subnet4}.{index}/24"
        ipv6a = f"{self.subnet6}:{index:x}/64" if ipv6 else None
        _ip("-n", ns, "addr", "add", ipv4, "dev", "eth0")
        if ipv6a:
            _ip("-n", ns, "addr", "add", ipv6a, "dev", "eth0", "nodad")
        _ip("-n", ns, "link", "set", "eth0", "up")
        host = Host(name=name, ns=ns, ipv4=ipv4, ipv6=ipv6a, port=port, topo=self)
        self.hosts[name] = host
        return host

    def on_close(self, fn) -> None:
        """Run fn() at close(), before the namespaces go (last registered runs first)."""
        self._cleanups.append(fn)

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Remove everything this topology made, even after a failure."""
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        self._cleanups.clear()
        for proc in self.procs:
            _terminate(proc)
        self.procs.clear()
        for ns in reversed(self._namespaces):
            for pid in ns_pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _ip("netns", "del", ns, check=False)
        self._namespaces.clear()

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _terminate(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
