"""The lab's real Milvus: Milvus 2.3.5 standalone, from PyPI's `milvus` package.

PyPI's `milvus` wheel (58 MB, manylinux) carries the real `milvus` binary and its
libraries, lzma-compressed, for its `milvus-server` wrapper. No registry is reachable
from the lab, so the image is built here: the wheel is fetched once with pip into a
cache, the binaries are decompressed into an image rootfs with the few glibc libraries
they need from this machine (found with ldd), a milvus.yaml rendered from the wheel's
own template is added, and the tar is `docker import`ed on each lab engine. Nothing of
the image lives on the shared storage: only Milvus' data does, exactly as in the
recipe's deployment (`docker run ... -v /shared/milvus:/var/lib/milvus`):

    /data/etcd          the embedded etcd (Milvus' metadata and its sessions)
    /data/rocksmq       the embedded message queue (the write-ahead log)
    /data/storage       segments, index files (local "object storage")

The container runs `milvus run standalone` under docker-init (tini: PID 1 that forwards
SIGTERM and reaps), on the host's network: gRPC 19530, metrics/healthz 9091, etcd 2379.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from datetime import datetime
from pathlib import Path

from havip.lab.docker import Dockerd

MILVUS_VERSION = "2.3.5"
STANDALONE_IMAGE = f"havip-lab/milvus-standalone:{MILVUS_VERSION}"
CACHE_DIR = Path(os.environ.get("HAVIP_MILVUS_CACHE", "/var/tmp/havip-milvus-cache"))
DATA = "/data"
# Settings the lab gives Milvus on top of the wheel's template (dotted YAML paths), each
# measured (docs/milvus-standalone.md). The sessions a server leaves in its embedded etcd
# block the next server's coordinators until their lease expires, and the embedded etcd
# restarts every lease with its full TTL: a takeover waited 54 s with the default 30 s,
# 24 s with 5 s, 11 s with 5 s and the gRPC clients' retry backoff capped at 1 s (from 10).
# A TTL of 5 s means Milvus' keepalive (every TTL/3, inside one process) must not stall
# for 5 s; if it does, Milvus exits and havip fails over: detected, not silent.
# queryCoord.UpdateNextTargetInterval (default 10 s): the query coordinator asks for a
# collection's recovery info (its next target) once per interval; after a restart it
# started loading the collection only at the first tick, so a server that was healthy
# early stayed unsearchable up to 10 s longer (bench/milvus_takeover.py: searchable 7-8 s
# after start with 1 s, 9-17 s with 10 s, the session sweep on).
# dataNode.segment.syncPeriod (default 600 s): a new server replays the message queue
# from the channel checkpoint, which moves only when a segment's buffer is synced, i.e.
# up to syncPeriod + 1 min behind a server that ran for a while. A container kill under
# 50 rows/s of writes after 2 and 5 minutes of serving: outage 18.1 and 35.9 s with 600,
# 9.1 and 9.9 s with 30 (replayed from 25-28 s back): docs/milvus-standalone.md, "The
# write-ahead log replay". The cost: a binlog file per growing segment every 30 s.
LAB_OVERRIDES: dict[str, object] = {"common.session.ttl": 5, "grpc.client.maxBackoff": 1,
                                    "queryCoord.UpdateNextTargetInterval": 1,
                                    "dataNode.segment.syncPeriod": 30}
# The embedded etcd's own settings (etcd's config file format): when any are given (here
# or to build_rootfs_tar), the file goes to EMBED_ETCD_CONFIG and `etcd.config.path`
# names it. None by default: an election timeout of 100 ms was tried and not adopted
# (docs/milvus-standalone.md).
EMBED_ETCD_CONFIG = "/milvus/configs/embedEtcd.yaml"
EMBED_ETCD: dict[str, object] = {}
# The channel checkpoint a starting server replays the message queue from, as Milvus
# 2.3.5's datacoord logs it (one line per channel).
SEEK_RE = re.compile(r"channel seek position set from channel checkpoint meta.*?\[posTime=([^\]]+)\]")


def seek_time(text: str) -> float | None:
    """Epoch seconds of a Milvus log time such as `2026/11/29 23:39:20.123 +00:00`."""
    for fmt in ("%Y/%m/%d %H:%M:%S.%f %z", "%Y/%m/%d %H:%M:%S %z"):
        try:
            return datetime.strptime(text.strip(), fmt).timestamp()
        except ValueError:
            continue
    return None


def replayed_from(log: str, at: float) -> float | None:
    """How old (s, at wall time `at`) the oldest channel checkpoint was that a server began
    replaying the message queue from, from its log (None: not logged)."""
    times = [t for t in (seek_time(m) for m in SEEK_RE.findall(log)) if t is not None]
    return round(at - min(times), 1) if times else None


def fetch_wheel(cache: Path = CACHE_DIR) -> Path:
    """The `milvus` wheel, downloaded once with this interpreter's pip (its index settings)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"milvus-{MILVUS_VERSION}-*.whl"))
    if found:
        return found[0]
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                           "--platform", "manylinux2014_x86_64", "-d", str(cache), f"milvus=={MILVUS_VERSION}"],
                          capture_output=True, text=True, timeout=600)
    found = sorted(cache.glob(f"milvus-{MILVUS_VERSION}-*.whl"))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"pip could not download milvus=={MILVUS_VERSION}: {proc.stderr.strip()[-400:]}")
    return found[0]


def render_config(template: str, overrides: dict[str, object] | None = None) -> str:
    """milvus.yaml from the wheel's template: its {{ key(type): default }} placeholders
    filled with the lab's paths and the defaults (fixed ports), localhost as 127.0.0.1
    (no resolver needed), then `overrides` applied to the YAML."""
    import yaml

    paths = {"etcd_data_dir": f"{DATA}/etcd", "local_storage_dir": f"{DATA}/storage",
             "rocksmq_data_dir": f"{DATA}/rocksmq", "etcd_log_path": "stdout", "system_log_path": ""}

    def fill(m: re.Match) -> str:
        key, _, default = m[1].partition(":")
        key = key.split("(")[0].strip()
        return paths.get(key, default.strip())
    text = re.sub(r"\{\{(.*?)\}\}", fill, template).replace("localhost:", "127.0.0.1:")
    doc = _blank_nulls(yaml.safe_load(text))      # `ip:` (empty) must stay "", not null
    for dotted, value in (overrides or {}).items():
        node = doc
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return yaml.safe_dump(doc, sort_keys=False)


def _blank_nulls(node):
    if isinstance(node, dict):
        return {k: _blank_nulls(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_blank_nulls(v) for v in node]
    return "" if node is None else node


def _host_libraries(binary: Path, libdir: Path) -> list[str]:
    """The libraries of this machine that `binary` needs beyond the wheel's own (glibc)."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(libdir)}
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m and not m[1].startswith(str(libdir)):
            libs.append(m[1])
    return libs


def build_rootfs_tar(wheel: Path, work: Path, overrides: dict[str, object] | None = None,
                     embed_etcd: dict[str, object] | None = None) -> Path:
    """The image's root filesystem as a tar in `work` (reused while wheel and config are
    the same): /milvus/bin (binary and its libraries), /milvus/configs, glibc, /data.
    `embed_etcd`: settings for the embedded etcd's own config file (with EMBED_ETCD), put
    at EMBED_ETCD_CONFIG and named by `etcd.config.path`."""
    import yaml

    config_text = None
    with zipfile.ZipFile(wheel) as zf:
        template = zf.read("milvus/data/config.yaml.template").decode()
        embed_on = bool(EMBED_ETCD or embed_etcd)
        config_text = render_config(template, {**LAB_OVERRIDES, **(overrides or {}),
                                               **({"etcd.config.path": EMBED_ETCD_CONFIG} if embed_on else {})})
        embed = {**EMBED_ETCD, **(embed_etcd or {})}
        embed_text = yaml.safe_dump(embed, sort_keys=True) if embed else ""
        key = hashlib.sha256(wheel.read_bytes()[:1 << 20] + config_text.encode() + embed_text.encode()).hexdigest()[:16]
        out = work / f"milvus-{MILVUS_VERSION}-rootfs-{key}.tar"
        if out.exists():
            return out
        bindir = work / f"bin-{MILVUS_VERSION}"
        if not (bindir / "milvus").exists():
            # Other labs may build at the same time: each unpacks into its own directory
            # and renames it into place; the loser of the race drops its copy.
            mine = work / f".bin-{MILVUS_VERSION}-{os.getpid()}"
            shutil.rmtree(mine, ignore_errors=True)
            mine.mkdir(parents=True)
            for name in zf.namelist():
                if name.startswith("milvus/data/bin/") and name.endswith(".lzma"):
                    (mine / Path(name).stem).write_bytes(lzma.decompress(zf.read(name)))
            (mine / "milvus").chmod(0o755)
            try:
                mine.rename(bindir)
            except OSError:
                shutil.rmtree(mine, ignore_errors=True)
        glog = zf.read("milvus/data/glog.conf")
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    now = time.time()
    with tarfile.open(tmp, "w") as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            tar.addfile(info)

        def add_bytes(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, now
            tar.addfile(info, io.BytesIO(data))
        for d in ("milvus", "milvus/bin", "milvus/configs", "etc", "proc", "sys", "dev", "run", "var",
                  "lib", "lib64", "lib/x86_64-linux-gnu", "data"):
            add_dir(d)
        for d in ("tmp", "var/tmp"):
            add_dir(d, 0o1777)
        for f in sorted(bindir.iterdir()):
            tar.add(str(f), arcname=f"milvus/bin/{f.name}")
        for lib in _host_libraries(bindir / "milvus", bindir):
            tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
        add_bytes("milvus/configs/milvus.yaml", config_text.encode())
        add_bytes("milvus/configs/glog.conf", glog)
        if embed_text:
            add_bytes(EMBED_ETCD_CONFIG.lstrip("/"), embed_text.encode())
        add_bytes("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add_bytes("etc/group", b"root:x:0:\n")
        add_bytes("etc/nsswitch.conf", b"hosts: files dns\n")
    tmp.replace(out)
    for stale in work.glob("milvus-*-rootfs-*.tar"):     # one image's worth of cache, not one per config
        if stale != out and time.time() - stale.stat().st_mtime > 3600:   # not one a running lab still imports
            stale.unlink(missing_ok=True)
    return out


def build_standalone_image(dockerd: Dockerd, tag: str = STANDALONE_IMAGE, *, cache: Path = CACHE_DIR,
                           overrides: dict[str, object] | None = None,
                           embed_etcd: dict[str, object] | None = None) -> str:
    """Import the standalone rootfs as `tag` on this engine; returns the image id."""
    rootfs = build_rootfs_tar(fetch_wheel(cache), cache, overrides, embed_etcd)
    repository, _, version = tag.rpartition(":")
    api = dockerd._api(timeout=300)
    try:
        with open(rootfs, "rb") as f:
            out = api.import_image_from_data(f, repository=repository, tag=version)
        status = json.loads(out.strip().splitlines()[-1]) if isinstance(out, str) else out
        if "error" in status:
            raise RuntimeError(f"docker import of {tag} failed: {status['error']}")
        return api.inspect_image(tag)["Id"]
    finally:
        api.close()


def create_standalone_container(dockerd: Dockerd, name: str, shared_dir: Path, *, image: str = STANDALONE_IMAGE,
                                stop_timeout: int = 10) -> str:
    """Create (not start) the Milvus standalone container on the host's network, its data
    on `shared_dir`; returns its id. docker-init is PID 1: it forwards docker stop's
    SIGTERM to Milvus (a Go program as PID 1 would too, but the wrapper the issue saw
    ignored it) and reaps; restart policy "no": only havip decides when Milvus runs."""
    api = dockerd._api(timeout=60)
    try:
        host_config = api.create_host_config(
            binds=[f"{Path(shared_dir)}:{DATA}:rw"], network_mode="host", restart_policy={"Name": "no"}, init=True)
        ctr = api.create_container(
            image, command=["/milvus/bin/milvus", "run", "standalone"], name=name, host_config=host_config,
            working_dir="/milvus", stop_signal="SIGTERM", stop_timeout=stop_timeout,
            environment={"DEPLOY_MODE": "STANDALONE", "MILVUSCONF": "/milvus/configs/", "HOME": "/tmp",
                         "LD_LIBRARY_PATH": "/milvus/bin", "METRICS_PORT": "9091",
                         "MILVUS_RUN_DIR": "/tmp/milvus-run"})
        return ctr["Id"]
    finally:
        api.close()
