"""An etcd cluster in the lab: Debian's etcd-server (3.4), one member per namespace.

Each member runs in a lab host's namespace (the havip hosts, plus a witness host of its
own so that losing one havip host keeps the quorum), listens on that host's address,
and keeps its data in its own directory under the test's work directory. Members are
started, killed and restarted by their own pid; the topology's close() reaps whatever
is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from havip.lab.netns import Host, wait_for

CLIENT_PORT = 2379
PEER_PORT = 2380


def etcd_binary() -> str | None:
    return shutil.which("etcd") or next((p for p in ("/usr/bin/etcd",) if os.access(p, os.X_OK)), None)


def etcdctl_binary() -> str | None:
    return shutil.which("etcdctl") or next((p for p in ("/usr/bin/etcdctl",) if os.access(p, os.X_OK)), None)


@dataclass
class Member:
    name: str
    host: Host
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host.addr}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host.addr}:{PEER_PORT}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """Members named after their hosts; `endpoints` is what havip's config lists."""

    def __init__(self, hosts: list[Host], workdir: Path, *, heartbeat_ms: int = 100, election_ms: int = 1000,
                 tls: "TestCA | None" = None):
        """`tls`: serve clients over https with certificates from this CA, and require
        client certificates from it."""
        self.workdir = Path(workdir)
        self.tls = tls
        self.token = "havip-" + secrets.token_hex(4)
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        self.members = [Member(f"etcd-{h.name}", h, self.workdir / f"etcd-{h.name}.data",
                               self.workdir / f"etcd-{h.name}.log", scheme="https" if tls else "http")
                        for h in hosts]
        self.binary = etcd_binary() or "/usr/bin/etcd"

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def member(self, host_name: str) -> Member:
        return next(m for m in self.members if m.host.name == host_name)

    def _argv(self, m: Member) -> list[str]:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [self.binary, "--name", m.name, "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new", "--heartbeat-interval", str(self.heartbeat_ms),
                "--election-timeout", str(self.election_ms), "--pre-vote",
                "--logger", "zap", "--log-outputs", "stderr", *self._tls_args(m)]

    def _tls_args(self, m: Member) -> list[str]:
        if not self.tls:
            return []
        cert, key = self.tls.server(m.host.addr)
        return ["--cert-file", str(cert), "--key-file", str(key), "--client-cert-auth",
                "--trusted-ca-file", str(self.tls.ca)]

    def _ctl_tls(self) -> list[str]:
        if not self.tls:
            return []
        cert, key = self.tls.client
        return ["--cacert", str(self.tls.ca), "--cert", str(cert), "--key", str(key)]

    def start(self, timeout: float = 30) -> "EtcdCluster":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for m in self.members:
            self.start_member(m, wait=False)
        self.wait_quorum(timeout)
        return self

    def start_member(self, m: Member, *, wait: bool = True) -> None:
        """Start (or restart, on its existing data) one member."""
        if m.running:
            return
        log = open(m.log_path, "ab")
        m.proc = m.host.popen(self._argv(m), stdout=log, stderr=log)
        log.close()
        if wait:
            wait_for(lambda: self.healthy(m), 20, interval=0.1, what=f"{m.name} healthy")

    def kill(self, m: Member) -> None:
        """SIGKILL one member, by its own pid."""
        if m.running:
            os.killpg(m.proc.pid, signal.SIGKILL)
            m.proc.wait(10)

    def ctl(self, *args: str, via: Member | None = None, check: bool = False,
            env: dict | None = None) -> subprocess.CompletedProcess:
        """etcdctl (v3 API) in a member's namespace, against every endpoint."""
        via = via or next((m for m in self.members if m.running), self.members[0])
        argv = ["env", "ETCDCTL_API=3", *(f"{k}={v}" for k, v in (env or {}).items()),
                etcdctl_binary() or "etcdctl", "--endpoints", ",".join(self.endpoints),
                "--dial-timeout", "1s", "--command-timeout", "3s", *self._ctl_tls(), *args]
        return via.host.run(*argv, check=check, timeout=20)

    def healthy(self, m: Member) -> bool:
        r = m.host.run(etcdctl_binary() or "etcdctl", "--endpoints", m.client_url, "--dial-timeout", "1s",
                       "--command-timeout", "1s", *self._ctl_tls(), "endpoint", "health", check=False, timeout=10)
        return r.returncode == 0 and "is healthy" in (r.stdout + r.stderr)

    def wait_quorum(self, timeout: float = 30) -> None:
        def ok():
            r = self.ctl("endpoint", "status", "-w", "json")
            if r.returncode and not r.stdout:
                return False
            try:
                rows = json.loads(r.stdout or "[]")
            except json.JSONDecodeError:
                return False
            return any(row.get("Status", {}).get("leader") for row in rows) and self.ctl(
                "put", "/havip-lab/probe", "ok").returncode == 0
        wait_for(ok, timeout, interval=0.2, what="an etcd quorum")

    def get(self, key: str, via: Member | None = None, timeout: float = 10) -> dict | None:
        """The key as etcd has it: value and lease id (hex), or None. Retried for up to
        `timeout`: a read during an election (or on a loaded machine) may time out."""
        import base64

        def read():
            r = self.ctl("get", key, "-w", "json", via=via)
            if r.returncode:
                errors.append(r.stderr.strip()[-300:])
                return None
            kvs = json.loads(r.stdout).get("kvs") or []
            return {"kvs": kvs}
        errors: list[str] = []
        try:
            got = wait_for(read, timeout, interval=0.2, what=f"etcdctl get {key}")
        except TimeoutError:
            raise RuntimeError(f"etcdctl get {key}: {errors[-1] if errors else 'no answer'}") from None
        if not got["kvs"]:
            return None
        kv = got["kvs"][0]
        return {"value": base64.b64decode(kv["value"]).decode(), "lease": f"{int(kv.get('lease', 0)):x}",
                "create_revision": kv.get("create_revision")}

    def close(self) -> None:
        for m in self.members:
            self.kill(m)


class TestCA:
    """A throwaway CA (openssl) for the lab's TLS etcd: server certificates for member
    addresses and one client certificate; short-lived, under the test's directory."""

    __test__ = False      # not a pytest class

    def __init__(self, workdir: Path, name: str = "havip-lab-ca"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ca, self.ca_key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        self._openssl("req", "-x509", *self._ec(self.ca_key), "-out", str(self.ca), "-days", "2",
                      "-subj", f"/CN={name}")
        self.client = self._issue("havip-client", None)

    @staticmethod
    def _ec(key: Path) -> list[str]:
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.dir)

    def _issue(self, cn: str, ip: str | None) -> tuple[Path, Path]:
        cert, key, csr = (self.dir / f"{self.name}-{cn}.{ext}" for ext in ("pem", "key", "csr"))
        if cert.exists():
            return cert, key
        self._openssl("req", *self._ec(key), "-out", str(csr), "-subj", f"/CN={cn}")
        ext = self.dir / f"{cn}.ext"
        ext.write_text(f"subjectAltName=IP:{ip}\n" if ip else "extendedKeyUsage=clientAuth\n")
        self._openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
                      "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
        return cert, key

    def server(self, ip: str) -> tuple[Path, Path]:
        return self._issue(f"etcd-{ip}", ip)
