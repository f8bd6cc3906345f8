"""The read-pool lab: Milvus read nodes, a writer, havip pool with nginx, and a client.

Each host is a network namespace on the lab's own bridge (havip.lab.netns): the writer
`w` (198.18.0.21), read nodes `r1..rN` (198.18.0.31...), the pool host `p`
(198.18.0.50, `havip pool run` and its nginx on :19540) and `client` (198.18.0.99).
Every Milvus is a milvus-lite server on its own data directory, run directly in its
namespace (no Docker needed); the lab puts the same collection on each read node.
Everything is under `workdir` and removed by `close()`, only by our own pids and
namespaces.
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

from havip.lab.netns import Host, Topology, wait_for

POOL_PORT = 19540
MILVUS_PORT = 19530
LAB_CHECK = {"interval": 0.5, "timeout": 0.4, "rise": 2, "fall": 2}


class PoolLab:
    def __init__(self, workdir: str | Path, *, prefix: str | None = None, nodes: int = 3,
                 check: dict | None = None, fallback: str = "writer", read_timeout: float = 1.0,
                 rows: int = 1000, pool: bool = True):
        self.workdir = Path(workdir)
        self.prefix = prefix
        self.n = nodes
        self.check = {**LAB_CHECK, **(check or {})}
        self.fallback, self.read_timeout, self.rows, self.with_pool = fallback, read_timeout, rows, pool
        self.topo: Topology | None = None
        self.hosts: dict[str, Host] = {}
        self.milvus: dict[str, subprocess.Popen] = {}
        self.pool_proc: subprocess.Popen | None = None

    # ---------------------------------------------------------------- addresses

    def addr(self, name: str) -> str:
        return f"{self.hosts[name].addr}:{MILVUS_PORT}"

    @property
    def readers(self) -> list[str]:
        return [f"r{i + 1}" for i in range(self.n)]

    @property
    def pool_uri(self) -> str:
        return f"http://{self.hosts['p'].addr}:{POOL_PORT}"

    def uri(self, name: str) -> str:
        return f"http://{self.addr(name)}"

    @property
    def status_path(self) -> Path:
        return self.workdir / "pool" / "status.json"

    # ---------------------------------------------------------------- building

    def up(self) -> "PoolLab":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.topo = Topology(self.prefix)
        try:
            self.hosts["w"] = self.topo.add_host("w", 21, ipv6=False)
            for i, name in enumerate(self.readers):
                self.hosts[name] = self.topo.add_host(name, 31 + i, ipv6=False)
            self.hosts["p"] = self.topo.add_host("p", 50, ipv6=False)
            self.hosts["client"] = self.topo.add_host("client", 99, ipv6=False)
            for name in ["w", *self.readers]:
                self.start_milvus(name)
            self.client("seed", uris=[self.uri(n) for n in ["w", *self.readers]], rows=self.rows, wait=180)
            if self.with_pool:
                self.start_pool()
        except BaseException:
            self.close()
            raise
        return self

    def start_milvus(self, name: str) -> None:
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        log = open(d / "milvus.log", "ab")
        self.milvus[name] = self.hosts[name].popen(
            [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(d / "db"), "--host", "0.0.0.0",
             "--port", str(MILVUS_PORT)], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(d)})
        log.close()

    def pool_config(self) -> dict:
        return {"instance": "pool", "listen": f"0.0.0.0:{POOL_PORT}", "writer": self.addr("w"),
                "read_nodes": [self.addr(n) for n in self.readers], "fallback": self.fallback,
                "check": {**self.check, "collections": ["havip_pool"]},
                "nginx": {"prefix": str(self.workdir / "pool" / "nginx"), "read_timeout": self.read_timeout,
                          "worker_processes": 2},
                "status_file": str(self.status_path)}

    def start_pool(self) -> None:
        d = self.workdir / "pool"
        d.mkdir(parents=True, exist_ok=True)
        cfg = d / "pool.yaml"
        cfg.write_text(yaml.safe_dump(self.pool_config(), sort_keys=False))
        log = open(d / "pool.log", "ab")
        self.pool_proc = self.hosts["p"].popen(
            [sys.executable, "-m", "havip.cli", "pool", "run", "-c", str(cfg), "--log-format", "json"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: self._all_in(), 30, interval=0.1, what="every read node in the pool")

    def _all_in(self) -> bool:
        st = self.status()
        return bool(st) and all(m["healthy"] for m in st["members"]) and st["nginx"]["in_sync"]

    # ---------------------------------------------------------------- operations

    def client(self, op: str, wait: float = 120, **args) -> dict:
        """Run one havip.lab.pool_client op in the client namespace (within `wait` seconds)."""
        proc = self.hosts["client"].run(sys.executable, "-m", "havip.lab.pool_client", op, json.dumps(args),
                                        check=False, timeout=wait)
        if proc.returncode != 0:
            raise RuntimeError(f"pool_client {op} failed: {proc.stderr.strip()[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def client_bg(self, op: str, out: Path, **args) -> subprocess.Popen:
        """Start an op in the background; its JSON answer lands in `out`."""
        f = open(out, "w")
        proc = self.hosts["client"].popen([sys.executable, "-m", "havip.lab.pool_client", op, json.dumps(args)],
                                          stdout=f, stderr=subprocess.PIPE, text=True)
        f.close()
        return proc

    def status(self) -> dict | None:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None

    def member(self, name: str) -> dict | None:
        st = self.status()
        return next((m for m in st["members"] if m["address"] == self.addr(name)), None) if st else None

    def wait_member(self, name: str, healthy: bool, timeout: float) -> float:
        """Poll until the member is in (or out of) the pool *and* nginx runs that; seconds taken."""
        t0 = time.monotonic()

        def done():
            st = self.status()
            m = self.member(name)
            return m is not None and m["healthy"] is healthy and m["in_nginx"] is healthy and st["nginx"]["in_sync"]
        wait_for(done, timeout, interval=0.02, what=f"{name} {'in' if healthy else 'out of'} the pool")
        return time.monotonic() - t0

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.milvus[name].pid, sig)

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        self.milvus[name].wait(10)

    def restart(self, name: str) -> None:
        """Start a killed node again on its data and load the collection (real Milvus
        reloads by itself; milvus-lite comes back with it released)."""
        for attempt in (1, 2):
            self.start_milvus(name)
            try:
                self.client("load", uri=self.uri(name), wait=90, within=40)
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                if attempt == 2:
                    raise
                self.kill(name)     # milvus-lite restarted after a SIGKILL can wedge: once more

    def nginx_reload(self) -> None:
        """SIGHUP nginx's master, as `nginx -s reload` does."""
        pid = int((self.workdir / "pool" / "nginx" / "nginx.pid").read_text())
        os.kill(pid, signal.SIGHUP)

    def close(self) -> None:
        for p in self.milvus.values():       # a stopped node must be resumed to die cleanly
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        if self.topo is not None:
            self.topo.close()
            self.topo = None

    def __enter__(self) -> "PoolLab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.close()
