"""The Milvus HA lab: the classic two-server recipe, built on one machine.

`MilvusLab` makes a switch and three namespace hosts: `h1` (198.18.0.11, priority 110),
`h2` (198.18.0.21, priority 91) and `client` (198.18.0.99). Each havip host gets its own
dockerd, a lab image and a container `milvus` on the host network (gRPC on 0.0.0.0:19530,
so it answers on the VIP too) that is created but not started; both containers mount the
same directory, `WORKDIR/shared`, as /data: the shared storage. havip runs on both hosts
with the recipe's VRRP settings. Two Milvus kinds:

- `standalone` (havip.lab.standalone): the real Milvus 2.3.5 standalone server, embedded
  etcd, rocksmq and local storage all on the shared directory: the recipe's deployment;
- `lite`: milvus-lite's gRPC server (starts in ~1 s, stops in ~5 s): the fast option,
  for the fuller e2e matrix and the benchmarks measured with it.

`up()` can be followed by `down()` in another process: what `down` needs (namespace
names, pids) is kept in `WORKDIR/lab.json`, and `MilvusLab.attach(WORKDIR)` rebuilds
the handle. Only processes inside the lab's own namespaces are ever signalled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import docker
import yaml

from havip.lab.client import Client
from havip.lab.docker import LAB_IMAGE, Dockerd, build_lab_image, create_milvus_container
from havip.lab.havipd import Havipd, vrrp_config
from havip.lab.netns import NETNS_DIR, Host, Topology, wait_for
from havip.lab.standalone import STANDALONE_IMAGE, build_standalone_image, create_standalone_container
from havip.lab.storage import HostStorage

VIP = "198.18.0.100"
HAVIP_HOSTS = {"h1": (11, 110), "h2": (21, 91)}    # name: (address index, priority)
CLIENT = ("client", 99)
CONTAINER = "milvus"
STATE_FILE = "lab.json"
WORKDIR_ENTRIES = {STATE_FILE, STATE_FILE + ".tmp", "shared", "havip", "client.log", *HAVIP_HOSTS}

# Lab timings, chosen against milvus-lite, which starts in about 1 s. check_interval x
# fall = 1 s of detection; a 0.5 s CheckHealth deadline is ample for an idle lab.
# stop_timeout is docker stop's grace before SIGKILL, as in production (10 s). It is not
# on the critical path of the single-writer guarantee:
# - a leaving master removes the VIP, then stops Milvus while it keeps advertising, and
#   the new master starts its Milvus only after the old one's priority 0 (milvus-lite then
#   drains for up to 5 s the connections that can no longer answer: a slower handover,
#   but no write can reach a Milvus that is shutting down);
# - a master that loses its link, or whose checks failed, kills Milvus without grace;
# - `havip cleanup` after a SIGKILL gives at most one advert interval of grace, so the
#   stop is over before the backup's master-down interval (at worst 2.64 s) runs out.
# A SIGKILL loses nothing: milvus-lite's WAL keeps acknowledged rows.
MILVUS_SETTINGS = {"check_interval": 0.5, "check_timeout": 0.5, "rise": 2, "fall": 2,
                   "start_timeout": 60, "stop_timeout": 10}
# Against the real server (docs/milvus-standalone.md, measured on these 2-core machines):
# healthy 2-4 s after a cold start, ~11 s after a takeover from a killed server with the
# lab's session TTL of 5 s (54 s with Milvus' default 30 s), up to 24 s seen under load,
# so start_timeout 60 s leaves room without turning a start that hangs into minutes.
# CheckHealth fans out to every coordinator: 1 s deadline, not milvus-lite's 0.5 s.
# stop_timeout 5 s, havip's default: a serving server never ended on SIGTERM within 30 s,
# a kill lost no acknowledged row, and 5 s gave the shortest planned switchover
# (docs/milvus-standalone.md, "Stop grace, measured").
STANDALONE_SETTINGS = {"check_interval": 0.5, "check_timeout": 1.0, "rise": 2, "fall": 2,
                       "start_timeout": 60, "stop_timeout": 5}
KINDS = ("standalone", "lite")
STORAGES = ("shared", "per-host")


def milvus_settings(kind: str) -> dict:
    """havip's `milvus:` timings for the lab's Milvus `kind`."""
    return dict(STANDALONE_SETTINGS if kind == "standalone" else MILVUS_SETTINGS)


def havip_config(priority: int, docker_url: str, shared: Path, name: str, vrrp: tuple[int, float] = (2, 1),
                 kind: str = "lite") -> dict:
    """The recipe's keepalived settings (VRID 51, PASS 1111, advert 1 s) plus `milvus:`.

    The lab's hosts share one hostname (network namespaces only), so each names itself in
    the storage lease."""
    cfg = vrrp_config(vrid=51, priority=priority, vips=[f"{VIP}/24"], version=vrrp[0], interval=vrrp[1],
                      password="1111")
    cfg["milvus"] = {"container": CONTAINER, "docker": docker_url, "grpc": "127.0.0.1:19530",
                     "data_path": str(shared), "lease": {"holder": f"lab-{name}"}, **milvus_settings(kind)}
    if kind == "standalone":
        # No automatic failback on the real server: each one is a second outage as long as
        # the takeover (~15 s here, about a minute with Milvus' default session TTL);
        # `havipctl failover` moves Milvus back when the operator chooses
        # (docs/milvus-standalone.md). The milvus-lite lab keeps keepalived's preemption,
        # which its e2e matrix exercises.
        cfg["preempt"] = False
        # havip holds the storage lease and started this server itself: the sessions the
        # previous server left in the embedded etcd are stale, and clearing them spares
        # the new server a session TTL of waiting (docs/milvus-standalone.md).
        cfg["milvus"]["sessions"] = {"clear_stale": True}
    return cfg


class _Adopted:
    """A process an earlier `havip lab up` started: not our child, so watched through
    /proc, and alive only while it still lives in the namespace we gave it."""

    def __init__(self, pid: int, ns: str):
        self.pid, self.ns, self.returncode = pid, ns, None

    def _alive(self) -> bool:
        try:
            if Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            return os.stat(f"/proc/{self.pid}/ns/net").st_ino == os.stat(NETNS_DIR / self.ns).st_ino
        except (OSError, IndexError):
            return False

    def poll(self) -> int | None:
        if self.returncode is None and not self._alive():
            self.returncode = 0          # unknown: we are not its parent
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


class _AdoptedTopology(Topology):
    """The namespaces of a running lab, taken over instead of created."""

    def __init__(self, prefix: str, namespaces: list[str]):   # noqa: super() would create them
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self.procs: list = []
        self._namespaces = [ns for ns in namespaces if (NETNS_DIR / ns).exists()]
        self._cleanups: list = []


class MilvusLab:
    """Two havip hosts, a client, two dockerds and one shared directory."""

    def __init__(self, workdir: Path | str, prefix: str = "hvl", vrrp: tuple[int, float] = (2, 1),
                 milvus: str = "lite", image: str | None = None, storage: str = "shared",
                 milvus_settings: dict[str, object] | None = None):
        if milvus not in KINDS:
            raise ValueError(f"milvus: {milvus!r}: must be one of {', '.join(KINDS)}")
        if storage not in STORAGES:
            raise ValueError(f"storage: {storage!r}: must be one of {', '.join(STORAGES)}")
        # "shared": every host sees WORKDIR/shared directly; "per-host": each havip host
        # (its havip, dockerd and containers) sees it through its own mount namespace and
        # FUSE view (havip.lab.storage), so a storage fault can hit one host: `storages`.
        self.storage = storage
        self.storages: dict[str, HostStorage] = {}
        self.workdir = Path(workdir)
        self.prefix = prefix
        self.milvus = milvus                # which Milvus the containers run (KINDS)
        self.image = image                  # another image for the `milvus` containers (tests)
        # Milvus' own settings (dotted milvus.yaml paths) over the lab's (standalone.LAB_OVERRIDES),
        # baked into this lab's image (each lab has its own engines): benchmarks of a setting.
        self.milvus_settings = dict(milvus_settings or {})
        self.vrrp = vrrp                    # (version, advert_interval); the recipe's is (2, 1)
        self.settings: dict = {}            # havip `milvus:` keys over milvus_settings(kind); set before build()
        self.shared = self.workdir / "shared"
        self.topo: Topology | None = None
        self.hosts: dict[str, Host] = {}
        self.dockerds: dict[str, Dockerd] = {}
        self.havipds: dict[str, Havipd] = {}
        self._owns_workdir = False          # set once build() or attach() made it ours

    # ------------------------------------------------------------------ building

    def build(self) -> "MilvusLab":
        """Namespaces, dockerds, images and (stopped) containers; havip not yet started."""
        self._clear_workdir()
        self._owns_workdir = True
        self.shared.mkdir(parents=True)
        self.topo = Topology(self.prefix)
        self.save()                          # from here on, `down` can find what we made
        for name, (index, _) in HAVIP_HOSTS.items():
            self.hosts[name] = self.topo.add_host(name, index, ipv6=False)
        self.hosts[CLIENT[0]] = self.topo.add_host(CLIENT[0], CLIENT[1], ipv6=False)
        self.save()
        if self.storage == "per-host":
            for name in HAVIP_HOSTS:
                st = self.storages[name] = HostStorage(name, self.shared, self.workdir / name / "storage")
                try:
                    st.start()
                finally:
                    self.save()
                self.hosts[name].mntns = st.mntns
        for name in HAVIP_HOSTS:
            d = self.dockerds[name] = Dockerd(self.hosts[name], self.workdir / name)
            d.start()
            self.save()
            if self.milvus == "standalone":
                build_standalone_image(d, overrides=self.milvus_settings or None)
                create_standalone_container(d, CONTAINER, self.shared, image=self.image or STANDALONE_IMAGE,
                                            stop_timeout=int(STANDALONE_SETTINGS["stop_timeout"]))
            else:
                build_lab_image(d)
                create_milvus_container(d, CONTAINER, self.shared, image=self.image or LAB_IMAGE)
            cfg = havip_config(HAVIP_HOSTS[name][1], d.url, self.shared, name, self.vrrp, self.milvus)
            cfg["milvus"].update(self.settings)
            self.havipds[name] = Havipd(self.hosts[name], cfg, self.log_dir, name=name)
        return self

    def _clear_workdir(self) -> None:
        """Remove an earlier lab's files (its logs would confuse the log readers), but
        only ours: a workdir with anything else in it, or still mounted, is refused."""
        if (self.workdir / STATE_FILE).exists():
            raise RuntimeError(f"a lab is already recorded in {self.workdir / STATE_FILE}; take it down first")
        if not self.workdir.exists():
            return
        strangers = sorted(p.name for p in self.workdir.iterdir() if p.name not in WORKDIR_ENTRIES)
        if strangers:
            raise RuntimeError(f"{self.workdir} holds files the lab did not make ({', '.join(strangers[:5])}); "
                               f"choose a new or empty directory")
        if _mounted_under(self.workdir):
            raise RuntimeError(f"something is still mounted under {self.workdir}; is an earlier lab still up?")
        for p in self.workdir.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def start_havip(self, name: str) -> Havipd:
        """Start (or restart) `havip run` on host `name`; waits until it joined the network."""
        d = self.havipds[name]
        n = len(d.events())
        d.start()
        self.save()

        def joined() -> bool:
            if not d.running:
                raise RuntimeError(f"havip on {name} exited with {d.proc.returncode}: {d.tail()}")
            return any(e.get("event") == "starting" for e in d.events()[n:])
        wait_for(joined, 30, interval=0.05, what=f"havip on {name} to log that it started")
        return d

    def up(self, timeout: float = 60) -> "MilvusLab":
        """Build, start havip on h1 then h2 (so h1's election is not a race), and wait
        until h1 is master with a healthy Milvus and h2 is backup."""
        self.build()
        self.start_havip("h1")
        self.start_havip("h2")
        self.wait_serving("h1", timeout)
        self.havipds["h2"].wait_state("backup", timeout)
        return self

    # ------------------------------------------------------------------ persistence

    def save(self) -> None:
        st = {"prefix": self.prefix, "workdir": str(self.workdir), "milvus": self.milvus,
              "namespaces": list(self.topo._namespaces) if self.topo else [],
              "hosts": {n: {"ns": h.ns, "ipv4": h.ipv4, "port": h.port} for n, h in self.hosts.items()},
              "dockerd": {n: d.proc.pid for n, d in self.dockerds.items() if d.proc},
              "havipd": {n: d.proc.pid for n, d in self.havipds.items() if d.proc},
              "storage": {n: st.pids() for n, st in self.storages.items()}}
        tmp = self.workdir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(st, indent=1))
        tmp.replace(self.workdir / STATE_FILE)

    @classmethod
    def attach(cls, workdir: Path | str) -> "MilvusLab | None":
        """The lab recorded in `workdir` by an earlier `up`, or None."""
        try:
            st = json.loads((Path(workdir) / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        lab = cls(st["workdir"], st["prefix"], milvus=st.get("milvus", "lite"))
        lab._owns_workdir = True
        lab.topo = _AdoptedTopology(st["prefix"], st["namespaces"])
        for name, h in st["hosts"].items():
            lab.hosts[name] = lab.topo.hosts[name] = Host(name=name, ns=h["ns"], ipv4=h["ipv4"], ipv6=None,
                                                          port=h["port"], topo=lab.topo)
        for name in HAVIP_HOSTS:
            if name not in lab.hosts:
                continue
            host = lab.hosts[name]
            d = lab.dockerds[name] = Dockerd(host, lab.workdir / name)
            if name in st["dockerd"]:
                d.proc = _Adopted(st["dockerd"][name], host.ns)
            conf = lab.workdir / "havip" / f"{name}.yaml"
            cfg = yaml.safe_load(conf.read_text()) if conf.exists() else \
                havip_config(HAVIP_HOSTS[name][1], d.url, lab.shared, name, kind=lab.milvus)
            hd = lab.havipds[name] = Havipd(host, cfg, lab.workdir / "havip", name=name)
            if name in st["havipd"]:
                hd.proc = _Adopted(st["havipd"][name], host.ns)
        return lab

    # ------------------------------------------------------------------ teardown

    def down(self) -> None:
        """Stop havip (backups first), remove containers and dockerds, delete the
        namespaces: everything by its recorded id, even after a failure."""
        if not self._owns_workdir:
            return                           # build() refused the workdir: nothing is ours
        for st in self.storages.values():    # a frozen or unwritable view would hang or fail the stops
            try:
                st.thaw()
                st.writable()
            except Exception:  # noqa: BLE001 - a view that never started: nothing to thaw
                pass
        order = sorted(self.havipds.values(), key=lambda d: d.state() == "master")
        for d in order:
            try:
                d.stop(timeout=d.config.get("milvus", {}).get("stop_timeout", 10) + 20)
            except Exception:  # noqa: BLE001 - a daemon that will not stop is killed
                d.kill()
        for d in self.dockerds.values():
            try:
                d.stop()
            except Exception:  # noqa: BLE001 - teardown goes on; the namespaces go below
                pass
        for st in self.storages.values():    # after their dockerd and havip: the namespaces go with them
            try:
                st.close()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        if self.topo is not None:
            self.topo.close()
        for name, d in self.dockerds.items():   # dockerd's log outlives its state, beside havip's
            if d.log_path.exists():
                self.log_dir.mkdir(parents=True, exist_ok=True)
                shutil.move(d.log_path, self.log_dir / f"dockerd-{name}.log")
        for path in [*(d.workdir for d in self.dockerds.values()), self.shared]:
            if not _mounted_under(path):     # never delete through a mount left behind
                shutil.rmtree(path, ignore_errors=True)
        (self.workdir / STATE_FILE).unlink(missing_ok=True)

    # ------------------------------------------------------------------ looking

    @property
    def log_dir(self) -> Path:
        """havip's logs of each host, and dockerd's once the lab is down: kept by `down`."""
        return self.workdir / "havip"

    def api(self, name: str, timeout: float = 5) -> docker.APIClient:
        """A Docker API client for host `name`'s engine (the caller closes it)."""
        return docker.APIClient(base_url=self.dockerds[name].url, version="auto", timeout=timeout)

    def milvus_log(self, name: str, since: float | None = None, timeout: float = 30) -> str:
        """Host `name`'s Milvus container log (since wall time `since`, whole seconds), as
        text; raises what the engine raised."""
        api = self.api(name, timeout=timeout)
        try:
            raw = api.logs(CONTAINER, since=int(since)) if since is not None else api.logs(CONTAINER)
            return raw.decode(errors="replace")
        finally:
            api.close()

    def container_info(self, name: str) -> dict | None:
        try:
            api = self.api(name, timeout=3)
        except Exception:  # noqa: BLE001 - engine down
            return None
        try:
            return api.inspect_container(CONTAINER)
        except Exception:  # noqa: BLE001
            return None
        finally:
            api.close()

    def kill_milvus(self) -> None:
        """SIGKILL every running `milvus` container (a teardown that need not wait for a
        stop grace); an engine that does not answer is left to `down`."""
        for name in self.dockerds:
            try:
                api = self.api(name, timeout=10)
                try:
                    if api.inspect_container(CONTAINER)["State"]["Running"]:
                        api.kill(CONTAINER)
                finally:
                    api.close()
            except Exception:  # noqa: BLE001 - not running, or no engine: down() copes
                pass

    def milvus_pid(self, name: str) -> int:
        """The real server's `milvus` process in host `name`'s container (its PID 1 is
        docker-init): the process a hang (SIGSTOP) is given to. milvus-lite has none."""
        todo = [self.container_info(name)["State"]["Pid"]]
        while todo:
            pid = todo.pop()
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "milvus":
                    return pid
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        raise RuntimeError(f"no milvus process in {name}'s container")

    def container_running(self, name: str) -> bool | None:
        info = self.container_info(name)
        return None if info is None else bool(info["State"]["Running"])

    def vip_holders(self) -> list[str]:
        return [n for n in HAVIP_HOSTS if self.hosts[n].has_address(VIP)]

    def serving(self, name: str) -> bool:
        """havip on `name` is master and said Milvus is serving since it became master."""
        events = self.havipds[name].events()
        last = max((i for i, e in enumerate(events) if e.get("event") == "transition"), default=None)
        if last is None or events[last]["to"] != "master":
            return False
        return any(str(e.get("reason", "")).startswith("milvus is serving") for e in events[last:])

    def master(self) -> str | None:
        masters = [n for n, d in self.havipds.items() if d.running and d.state() == "master"]
        return masters[0] if len(masters) == 1 else None

    def wait_serving(self, name: str | None = None, timeout: float = 60) -> str:
        """Wait until one host (`name`, if given) is master, says Milvus is serving and
        holds the VIP alone; return its name."""
        def ready():
            for n in ([name] if name else HAVIP_HOSTS):
                if self.havipds[n].running and self.serving(n) and self.vip_holders() == [n]:
                    return n
            return None
        return wait_for(ready, timeout, interval=0.1, what=f"{name or 'a host'} to serve Milvus on the VIP "
                                                           f"({self.describe()})")

    def describe(self) -> str:
        return "; ".join(f"{n}: {d.state() if d.running else 'not running'}" for n, d in self.havipds.items())

    def state(self) -> dict:
        """Who is master, each host's havip state and container, and who holds the VIP."""
        hosts = {}
        for n, d in self.havipds.items():
            info = self.container_info(n)
            hosts[n] = {"address": self.hosts[n].addr, "priority": HAVIP_HOSTS[n][1],
                        "havip": (d.state() or "starting") if d.running else "not running",
                        "pid": d.proc.pid if d.running else None,
                        "container": info["State"]["Status"] if info else "engine unreachable",
                        "vip": self.hosts[n].has_address(VIP)}
        return {"master": self.master(), "vip": VIP, "vip_holders": [n for n, h in hosts.items() if h["vip"]],
                "hosts": hosts, "namespaces": list(self.topo._namespaces) if self.topo else []}

    def events(self) -> list[dict]:
        """Every havip log event of both hosts, each tagged with `host`, in time order."""
        out = [{**e, "host": n} for n, d in self.havipds.items() for e in d.events() if "timestamp" in e]
        return sorted(out, key=lambda e: e["timestamp"])

    def client(self, **kw) -> "Client":
        """A pymilvus client process in the client namespace, talking to the VIP."""
        kw.setdefault("rpc_timeout", 5.0 if self.milvus == "standalone" else 2.0)
        return Client(self.hosts[CLIENT[0]], f"http://{VIP}:19530", self.workdir / "client.log", **kw)


def _mounted_under(path: Path) -> bool:
    mounts = (ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines())
    return any(m == str(path) or m.startswith(f"{path}/") for m in mounts)


def log_time(ts: str) -> float:
    """structlog's ISO UTC timestamp as a wall-clock time."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def failover_timeline(events: list[dict], fault_at: float, new: str, first_ok: float | None) -> dict:
    """Seconds from the fault (wall time `fault_at`) to: the first decision on another
    host (detection), the VIP on `new`, its container started, Milvus ready, and the
    client's first success. Missing steps are None."""
    after = [e for e in events if log_time(e["timestamp"]) >= fault_at]
    rel = lambda e: round(log_time(e["timestamp"]) - fault_at, 3) if e else None  # noqa: E731
    detect = next((e for e in after if e.get("event") in ("transition", "decision")), None)
    vip = next((e for e in after if e["host"] == new and e.get("event") == "vip_added"), None)
    ready = next((e for e in after if e["host"] == new and
                  str(e.get("reason", "")).startswith("milvus is serving")), None)
    started = None
    if ready:
        m = re.search(r"container started in ([\d.]+)s, Milvus healthy ([\d.]+)s later", ready["reason"])
        if m:
            started = round(rel(ready) - float(m[2]), 3)
    return {"detection": rel(detect), "detected_by": detect["host"] if detect else None,
            "vip_moved": rel(vip), "container_started": started, "milvus_ready": rel(ready),
            "client_ok": round(first_ok - fault_at, 3) if first_ok else None}
