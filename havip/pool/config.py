"""The read pool's configuration (/etc/havip/pool/pool.yaml), validated as a whole.

Its own file, not a key of the VRRP instance's: the pool may run on the havip hosts
behind the VIP or on a host of its own, and restarting it never touches a VIP. Every
problem is reported at once as `path: value: reason`: pydantic checks each field
(reusing the field types of havip.config.schema), then `_cross_checks` looks at what
is only wrong together (duplicate members, the writer inside the pool, a listener on a
Milvus port, a name nginx could not resolve, a method that is not a read).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError

from havip.config import field_problems, format_problems, show, valid_fields
from havip.config.checks import Problem
from havip.config.schema import AbsPath, HostPort, Instance, Seconds, StrictModel, _between
from havip.errors import ConfigError
from havip.pool import methods

MILVUS_PORT = 19530


def _size(value: str) -> str:
    if not re.fullmatch(r"\d{1,6}[kKmMgG]?", value):
        raise ValueError("must be an nginx size: a number with an optional k, m or g suffix, e.g. 256m")
    return value


Size = Annotated[str, AfterValidator(_size)]


def _collection(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", value):
        raise ValueError("must be a Milvus collection name: a letter or '_', then letters, digits or '_'")
    return value


class Check(StrictModel):
    kind: Literal["milvus", "grpc-health"] = "milvus"
    interval: Annotated[float, _between(0.05, 3600, "seconds")] = 1.0
    timeout: Annotated[float, _between(0, 600, "seconds", above=True)] = 0.5
    rise: Annotated[int, _between(1, 100)] = 2
    fall: Annotated[int, _between(1, 100)] = 2
    # Collections a member must have loaded (GetLoadState) to serve reads; a restarted
    # Milvus passes CheckHealth before it has loaded them.
    collections: list[Annotated[str, AfterValidator(_collection)]] = Field(default_factory=list)
    db: str = ""


class Nginx(StrictModel):
    binary: AbsPath = "/usr/sbin/nginx"
    # Rendered config, pid file, logs and temp paths all live under the prefix.
    prefix: AbsPath = "/var/lib/havip/pool"
    worker_processes: Annotated[int, _between(1, 256)] | Literal["auto"] = "auto"
    worker_connections: Annotated[int, _between(64, 1_000_000)] = 4096
    # Milvus' proxy accepts 256 MiB messages (proxy.grpc.serverMaxRecvSize); nginx's 1m
    # default answers 413 to a large insert or a search with many vectors.
    client_max_body_size: Size = "256m"
    connect_timeout: Annotated[float, _between(0, 75, "seconds", above=True)] = 1.0
    # A read that gets no answer within read_timeout is retried on another member once.
    read_timeout: Seconds = 10.0
    # Writes, flushes, index builds and loads can take long: the writer's own timeout.
    write_timeout: Seconds = 600.0
    keepalive: Annotated[int, _between(1, 10_000)] = 32
    # Passive check between active ones: a member that failed a request is skipped for
    # this long by every worker (the upstream has a zone).
    fail_timeout: Annotated[float, _between(0, 3600, "seconds")] = 2.0
    stub_status: HostPort | None = None      # e.g. 127.0.0.1:19541 (nginx's stub_status page)


class Metrics(StrictModel):
    listen: HostPort | None = None            # "127.0.0.1:9406"; None = off


class PoolConfig(StrictModel):
    instance: Instance = "pool"
    listen: HostPort = "0.0.0.0:19540"
    writer: HostPort
    read_nodes: list[HostPort] = Field(min_length=1)
    # When no member is healthy: reads go to the writer, or fail at once with gRPC
    # status UNAVAILABLE. Never a hang.
    fallback: Literal["writer", "unavailable"] = "writer"
    read_methods: list[str] = Field(default_factory=lambda: list(methods.DEFAULT_READS))
    check: Check = Check()
    nginx: Nginx = Nginx()
    status_file: AbsPath | None = None       # default /run/havip/INSTANCE.json
    metrics: Metrics = Metrics()

    @property
    def state_path(self) -> str:
        return self.status_file or f"/run/havip/{self.instance}.json"


# ------------------------------------------------------------------ addresses


def split(hostport: str) -> tuple[str, int]:
    """("::1", 19530) from "[::1]:19530"."""
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def canonical(hostport: str) -> str:
    """One spelling per address: IPs normalised (::0:1 -> ::1), names lower-cased."""
    host, port = split(hostport)
    try:
        ip = ipaddress.ip_address(host)
        return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    except ValueError:
        return f"{host.lower()}:{port}"


def _ip(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def resolves(host: str) -> bool:
    """Whether nginx would resolve `host` at load time (it resolves upstream names once)."""
    try:
        return bool(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError):
        return False


def is_local(host: str) -> bool:
    """Whether `host` is one of this machine's addresses: binding to it succeeds."""
    ip = _ip(host)
    if ip is None:
        return False
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(ip), 0))
            return True
        except OSError:
            return False


# ------------------------------------------------------------------ cross checks


def _members(v: dict) -> list[tuple[str, str]]:
    return [(f"read_nodes.{i}", m) for i, m in enumerate(v.get("read_nodes") or [])]


def _check_members(v: dict, resolve: Callable[[str], bool]) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    writer = v.get("writer")
    for path, member in _members(v):
        key = canonical(member)
        host = split(member)[0]
        if key in seen:
            yield path, member, f"same address as {seen[key]}; list each read node once"
        elif writer and key == canonical(writer):
            yield path, member, "is the writer; the writer is not a read node (reads fall back to it when " \
                                "no read node is healthy, see fallback)"
        elif _ip(host) is None and not resolve(host):
            yield path, member, f"unknown host {host}: it does not resolve, and nginx resolves upstream " \
                                "names once, when it loads the config"
        seen.setdefault(key, path)
    if writer and _ip(split(writer)[0]) is None and not resolve(split(writer)[0]):
        yield "writer", writer, f"unknown host {split(writer)[0]}: it does not resolve"


def _check_listen(v: dict, local: Callable[[str], bool]) -> Iterator[Problem]:
    listen = v.get("listen")
    if not listen:
        return
    lhost, lport = split(listen)
    lip = _ip(lhost)
    if lip is None:
        yield "listen", listen, "must be an IP address and port (nginx listens on an address, not a name)"
        return
    targets = ([("writer", v["writer"])] if v.get("writer") else []) + _members(v)
    for path, addr in targets:
        host, port = split(addr)
        same_host = _ip(host) == lip or (lip.is_unspecified and local(host)) or (
            _ip(host) is not None and _ip(host).is_unspecified and local(lhost))
        if port == lport and same_host:
            yield "listen", listen, f"clashes with {path} ({addr}): the pool cannot listen on the port " \
                                    "Milvus listens on; use another port, e.g. 19540"
            return


def _check_methods(v: dict) -> Iterator[Problem]:
    seen: set[str] = set()
    for i, name in enumerate(v.get("read_methods") or []):
        path = f"read_methods.{i}"
        if name not in methods.ALL:
            near = difflib.get_close_matches(name, methods.ALL, 1)
            hint = f"; did you mean {near[0]}?" if near else ""
            yield path, name, f"is not a method of {methods.SERVICE}{hint}"
        elif name not in methods.MAY_READ:
            yield path, name, "changes state, so it must reach the writer; only reads may go to the pool"
        elif name in seen:
            yield path, name, "listed twice"
        seen.add(name)


def _check_timers(v: dict) -> Iterator[Problem]:
    check = v.get("check")
    if check is not None and check.timeout > check.interval:
        yield "check.timeout", check.timeout, f"must be at most check.interval ({check.interval:g}s): a " \
                                              "check must end before the next one is due"
    nginx = v.get("nginx")
    if nginx is not None and nginx.stub_status and v.get("listen") and \
            canonical(nginx.stub_status) == canonical(v["listen"]):
        yield "nginx.stub_status", nginx.stub_status, "is the pool's own listener; use another port"


def cross_checks(values: dict, *, resolve: Callable[[str], bool] = resolves,
                 local: Callable[[str], bool] = is_local) -> list[Problem]:
    """Checks across fields, on whichever top-level fields are valid on their own."""
    return [*_check_members(values, resolve), *_check_listen(values, local), *_check_methods(values),
            *_check_timers(values)]


def parse(data: object, *, source: str = "config", default_instance: str = "pool",
          resolve: Callable[[str], bool] = resolves, local: Callable[[str], bool] = is_local) -> PoolConfig:
    """Validate a decoded YAML document; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: {show(data, '')}: must be a mapping of key: value lines"])
    data = {"instance": default_instance, **data}
    try:
        cfg = PoolConfig.model_validate(data)
    except ValidationError as err:
        problems = field_problems(err, PoolConfig) + cross_checks(valid_fields(data, PoolConfig), resolve=resolve,
                                                                  local=local)
        raise ConfigError(format_problems(problems, PoolConfig)) from None
    problems = cross_checks(dict(cfg), resolve=resolve, local=local)
    if problems:
        raise ConfigError(format_problems(problems, PoolConfig))
    return cfg


def load(path: str | Path, **kw) -> PoolConfig:
    """Read and validate a pool YAML file; the instance name defaults to the file's stem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    return parse(data, source=str(path), default_instance=path.stem, **kw)
