"""A private Docker engine per lab host, and a tiny Milvus image built from this machine.

Each `Dockerd` runs inside one `Host`'s network namespace with its own data-root,
exec-root, socket and containerd, so containers started with `network_mode=host`
live in that namespace and never see the machine's real network. Nothing is pulled:
the image is a `docker import` of a near-empty rootfs, and the container borrows the
machine's /usr, /etc and this Python (base prefix and virtualenv) through read-only
bind mounts, then runs `python -m milvus_lite server` on the shared data directory.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker

from havip.lab.netns import Host, ns_pids, wait_for

LAB_IMAGE = "havip-lab/milvus:latest"
DATA_IN_CONTAINER = "/data"

_ROOTFS_DIRS = ("usr", "etc", "tmp", "root", "proc", "sys", "dev", "data", "run", "var", "var/tmp")
_ROOTFS_LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}


def _dockerd_binary() -> str:
    return shutil.which("dockerd") or "/usr/sbin/dockerd"


class Dockerd:
    """dockerd (and the containerd it spawns) in `host`'s namespace, state under `workdir`.

    `workdir` must be short: containerd's socket lives under the exec-root and unix
    socket paths are limited to 108 bytes.
    """

    def __init__(self, host: Host, workdir: Path):
        self.host = host
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None
        self._clients: list[docker.DockerClient] = []

    @property
    def sock(self) -> Path:
        return self.workdir / "sock"

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    def argv(self) -> list[str]:
        d = self.workdir
        return [
            _dockerd_binary(),
            "--config-file", str(d / "daemon.json"),     # ignore the machine's /etc/docker
            "--data-root", str(d / "data"),
            "--exec-root", str(d / "x"),
            "--pidfile", str(d / "pid"),
            "-H", self.url,
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            "--ip-forward=false", "--userland-proxy=false",
        ]

    def start(self, timeout: float = 30) -> None:
        """Start dockerd in the host's namespace and wait until its API answers."""
        if len(str(self.workdir / "x" / "containerd" / "containerd.sock.ttrpc")) > 100:
            raise ValueError(f"workdir {self.workdir} is too long for containerd's unix sockets")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "daemon.json").write_text("{}\n")
        log = open(self.log_path, "ab")
        try:
            self.proc = self.host.popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                return bool(self._api(timeout=2).ping())
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        wait_for(ready, timeout, interval=0.05, what=f"dockerd in {self.host.ns}")

    def _api(self, timeout: float = 30) -> docker.APIClient:
        return docker.APIClient(base_url=self.url, version="auto", timeout=timeout)

    def client(self, timeout: float = 60) -> docker.DockerClient:
        """A high-level client for this engine; stop() closes it."""
        c = docker.DockerClient(base_url=self.url, version="auto", timeout=timeout)
        self._clients.append(c)
        return c

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 15) -> None:
        """Remove every container (the data-root is ours alone), stop dockerd by its pid,
        then any containerd or shim of ours that outlived it, and unmount leftovers."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                c = self._api(timeout=20)
                for ctr in c.containers(all=True, quiet=True):
                    c.remove_container(ctr["Id"], force=True)
                c.close()
            except Exception:  # noqa: BLE001 - the engine may already be wedged; kill below
                pass
            _signal_and_wait(self.proc, grace)
        for c in self._clients:
            c.close()
        self._clients.clear()
        # containerd and its shims run in our namespace with our exec-root on their
        # command line; only those pids are touched.
        for pid in self._leftover_pids():
            _kill(pid, signal.SIGKILL)
        wait_for(lambda: not self._leftover_pids(), 10, what="containerd of our dockerd to exit")
        self._unmount_leftovers()

    def _leftover_pids(self) -> list[int]:
        mine = []
        needle = str(self.workdir).encode()
        for pid in ns_pids(self.host.ns):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline:
                mine.append(pid)
        return mine

    def _unmount_leftovers(self) -> None:
        prefix = str(self.workdir) + "/"
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        points = [ln.split()[4] for ln in lines if ln.split()[4].startswith(prefix)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _signal_and_wait(proc: subprocess.Popen, grace: float) -> None:
    _kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _rootfs_tar() -> bytes:
    """A near-empty root filesystem; everything real comes from bind mounts."""
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in _ROOTFS_DIRS:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name in ("tmp", "var/tmp") else 0o755
            info.mtime = now
            tar.addfile(info)
        for name, target in _ROOTFS_LINKS.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            info.mtime = now
            tar.addfile(info)
    return buf.getvalue()


def build_lab_image(dockerd: Dockerd, tag: str = LAB_IMAGE) -> str:
    """Import the lab rootfs as `tag` on this engine; returns the image id."""
    repository, _, version = tag.rpartition(":")
    if not repository or "/" in version:
        repository, version = tag, "latest"
    api = dockerd._api(timeout=60)
    try:
        out = api.import_image_from_data(_rootfs_tar(), repository=repository, tag=version)
        status = json.loads(out.strip().splitlines()[-1]) if isinstance(out, str) else out
        if "error" in status:
            raise RuntimeError(f"docker import of {tag} failed: {status['error']}")
        return api.inspect_image(tag)["Id"]
    finally:
        api.close()


def lab_binds(shared_dir: Path | str, *, prefix: str = sys.prefix, base_prefix: str = sys.base_prefix) -> list[str]:
    """The bind mounts that make the empty lab image run this machine's Python and
    milvus-lite: system dirs and the interpreter read-only, the shared data read-write.

    Each folder is mounted once: Docker refuses a second mount at the same point, and a
    folder inside one already mounted comes with it (Debian's python3 has its base prefix
    at /usr; a venv may live under /usr/local or inside another)."""
    binds = [f"{p}:{p}:ro" for p in _outermost(["/usr", "/etc", base_prefix, prefix])]
    binds.append(f"{Path(shared_dir)}:{DATA_IN_CONTAINER}:rw")
    return binds


def _outermost(paths: list[str]) -> list[str]:
    """`paths` without duplicates and without those inside another one, parents first."""
    kept: list[str] = []
    for p in sorted({os.path.normpath(p) for p in paths}, key=lambda p: (p.count("/"), p)):
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return kept


def milvus_command(port: int = 19530, host_addr: str = "0.0.0.0", *, prefix: str = sys.prefix) -> list[str]:
    return [f"{prefix}/bin/python", "-m", "milvus_lite", "server",
            "--data-dir", f"{DATA_IN_CONTAINER}/db", "--host", host_addr, "--port", str(port)]


def create_milvus_container(dockerd: Dockerd, name: str, shared_dir: Path, port: int = 19530,
                            host_addr: str = "0.0.0.0", *, image: str = LAB_IMAGE) -> str:
    """Create (not start) a milvus-lite container on the host's network; returns its id.

    The restart policy is "no": only havip decides when Milvus runs. The stop signal is
    SIGINT because Python as PID 1 ignores SIGTERM (no handler) but turns SIGINT into
    KeyboardInterrupt, on which milvus-lite drains and closes its database cleanly.
    """
    api = dockerd._api(timeout=60)
    try:
        host_config = api.create_host_config(
            binds=lab_binds(shared_dir), network_mode="host", restart_policy={"Name": "no"})
        ctr = api.create_container(
            image, command=milvus_command(port, host_addr), name=name, host_config=host_config,
            working_dir="/tmp", stop_signal="SIGINT",
            environment={"HOME": "/tmp", "PYTHONUNBUFFERED": "1"})
        return ctr["Id"]
    finally:
        api.close()
