"""The configuration schema: field types with plain-English errors, and the models.

Each field type checks itself and says what is wrong in words a reader of the YAML
understands (`must be between 1 and 255`, `must be host:port`). Checks that need two
fields live in `havip.config.checks`.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationInfo, field_validator,
)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ------------------------------------------------------------------ field types


def _between(lo: float, hi: float, unit: str = "", *, above: bool = False) -> AfterValidator:
    """Range check with one plain-English message naming both bounds."""
    unit = f" {unit}" if unit else ""
    text = f"more than {lo} and at most {hi}" if above else f"between {lo} and {hi}"

    def check(value: float) -> float:
        inside = (lo < value if above else lo <= value) and value <= hi     # False for NaN
        if not inside:
            raise ValueError(f"must be {text}{unit}")
        return value
    return AfterValidator(check)


def _matching(pattern: str, reason: str) -> AfterValidator:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(reason)
        return value
    return AfterValidator(check)


def _vip(value: object) -> IPInterface:
    if not isinstance(value, str):
        raise ValueError("must be an address with an optional /prefix, e.g. 192.0.2.10/24")
    try:
        vip = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError("is not an IPv4 or IPv6 address with an optional /prefix") from None
    if vip.ip.is_multicast or vip.ip.is_unspecified or vip.ip.is_loopback:
        raise ValueError("must be a unicast address (not multicast, loopback or unspecified)")
    if vip.ip == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError("is the limited broadcast address; use a host address")
    net = vip.network
    # /31 and /32 (RFC 3021), /127 and /128 (RFC 6164) have no network or broadcast address.
    if net.num_addresses > 2:
        if vip.ip == net.network_address:
            what = "network" if vip.version == 4 else "Subnet-Router anycast (RFC 4291 2.6.1)"
            raise ValueError(f"is the {what} address of {net}; use a host address")
        if vip.version == 4 and vip.ip == net.broadcast_address:
            raise ValueError(f"is the broadcast address of {net}; use a host address")
    return vip


def _ip(value: object) -> IPAddress:
    try:
        return ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        raise ValueError("is not an IPv4 or IPv6 address") from None


def _unicast_ip(value: object) -> IPAddress:
    """An address a VRRP advert may be sent to or from: one host, not a group or a wildcard."""
    ip = _ip(value)
    if ip.is_loopback:
        raise ValueError("is a loopback address; use an address on the VRRP interface")
    if ip.is_multicast:
        raise ValueError("is a multicast address; unicast needs a host address "
                         "(leave out unicast to use the VRRP group)")
    if ip.is_unspecified:
        raise ValueError("is the unspecified address; use a host address")
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError("is the limited broadcast address; use a host address")
    return ip


def _host_port(value: str) -> str:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", value)
    if not m or not 1 <= int(m[2] or m[4]) <= 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:19530 or [::1]:19530")
    if m[1]:
        _ip(m[1])
    return value


def _docker_url(value: str) -> str:
    if value.startswith("unix://") and PurePosixPath(value[7:]).is_absolute():
        return value
    if value.startswith("tcp://"):
        try:
            return "tcp://" + _host_port(value[6:])
        except ValueError:
            pass
    raise ValueError("must be unix:///path/to/docker.sock or tcp://host:port")


def _absolute(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError("must be an absolute path")
    if not value.isprintable():         # a NUL ("\0" in YAML) raised ValueError in every os call
        raise ValueError("must not contain control characters such as NUL or a newline")
    return value


# A Unix socket path is at most 107 bytes; the control socket is bound under
# PATH.PID.tmp first (control/server.py), and a PID has at most 7 digits.
MAX_SOCKET_PATH = 107 - len(".4194304.tmp")


def _socket_path(value: str) -> str:
    value = _absolute(value)
    if value.endswith("/"):
        raise ValueError("must be a file name, not a directory")
    if len(value.encode()) > MAX_SOCKET_PATH:
        raise ValueError(f"must be at most {MAX_SOCKET_PATH} bytes long (a Unix socket path)")
    return value


def _hook(value: str) -> str:
    """A hook is run without a shell as `PATH STATE PRIORITY INSTANCE` (daemon.executor)."""
    if not PurePosixPath(value).is_absolute():
        raise ValueError("must be the absolute path of an executable, e.g. /etc/havip/notify.sh")
    if re.search(r"\s", value):
        raise ValueError("must be a path without arguments; havip passes the state, priority "
                         "and instance name")
    return value


def _password(value: str) -> str:
    if len(value.encode()) > 8:
        raise ValueError("must be at most 8 bytes (the VRRPv2 authentication data field)")
    return value


Seconds = Annotated[float, _between(0, 3600, "seconds", above=True)]
HostPort = Annotated[str, AfterValidator(_host_port)]
AbsPath = Annotated[str, AfterValidator(_absolute)]
SocketPath = Annotated[str, AfterValidator(_socket_path)]
Hook = Annotated[str, AfterValidator(_hook)]
Vip = Annotated[IPInterface, PlainValidator(_vip)]
Ip = Annotated[IPAddress, PlainValidator(_ip)]
UnicastIp = Annotated[IPAddress, PlainValidator(_unicast_ip)]
# Linux dev_valid_name(): shorter than IFNAMSIZ (16), no '/', ':' or whitespace.
Interface = Annotated[str, _matching(r"[^/:\s]{1,15}", "must be a network interface name: "
                                     "1-15 characters, no '/', ':' or spaces")]
# Written by `havip import-keepalived` where the recipe's scripts say `<docker id>`.
PLACEHOLDER = "CHANGE-ME"


def _not_placeholder(value: str) -> str:
    if value == PLACEHOLDER:
        raise ValueError("is a placeholder written by havip import-keepalived; set the name or ID "
                         "of the Milvus container")
    return value


# Docker's own rule for container names; a hex ID matches it too.
Container = Annotated[str, _matching(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", "must be a Docker container "
                                     "name or ID (letters, digits, '_', '.', '-')"),
                      AfterValidator(_not_placeholder)]
# The instance name ends up in file names (/run/havip/INSTANCE.sock).
Instance = Annotated[str, _matching(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "must be 1-64 letters, "
                                    "digits, '_', '.' or '-' (defaults to the file name)")]


# ------------------------------------------------------------------ the model


class StrictModel(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    # Strict types: YAML already typed every value, so "110" is a mistake, not a number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Authentication(StrictModel):
    type: Literal["none", "pass"] = "none"
    password: Annotated[str, AfterValidator(_password)] = ""


class Unicast(StrictModel):
    source: UnicastIp | None = None
    peers: list[UnicastIp] = Field(min_length=1)


class Garp(StrictModel):
    delay: Annotated[float, _between(0, 3600, "seconds")] = 0.0
    repeat: Annotated[int, _between(1, 100)] = 5
    interval: Annotated[float, _between(0, 60, "seconds")] = 0.1
    refresh: Annotated[float, _between(0, 86400, "seconds")] = 0.0   # 0 = no periodic refresh


def _etcd_url(value: str) -> str:
    m = re.fullmatch(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})/?", value)
    if not m or not 1 <= int(m[3]) <= 65535:
        raise ValueError("must be http://host:port or https://host:port, e.g. https://10.0.0.5:2379")
    if m[2].startswith("["):
        _ip(m[2][1:-1])
    return value.rstrip("/")


def _etcd_prefix(value: str) -> str:
    if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", value):
        raise ValueError("must be an absolute key path such as /service/havip "
                         "(letters, digits, '_', '.', '-' between slashes)")
    return value


EtcdUrl = Annotated[str, AfterValidator(_etcd_url)]
# The fields that only the etcd backend reads, and those only the file backend reads.
ETCD_ONLY = ("endpoints", "prefix", "ttl", "renew_interval", "request_timeout", "fence_margin", "ca", "cert",
             "key", "user", "password", "password_file")
FILE_ONLY = ("path", "orphan_timeout")


class Lease(StrictModel):
    """The storage lease: on unless `milvus.lease: false`.

    `backend: file` (havip.runtime.lease) is an flock on the shared storage;
    `backend: etcd` (havip.runtime.etcdlease) a leader key bound to an etcd lease of `ttl`
    seconds, as Patroni's. Which keys go with which backend, and the fencing inequality,
    are checked in havip.config.checks."""

    enabled: bool = True
    backend: Literal["file", "etcd"] = "file"
    holder: Annotated[str, _matching(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}", "must be 1-128 letters, "
                                     "digits or '_.:/@-', unique per host")] | None = None
    # backend: file
    path: AbsPath | None = None         # default DATA_PATH/.havip-lease
    orphan_timeout: Annotated[float, _between(0, 86400, "seconds")] = 60.0
    # backend: etcd
    endpoints: list[EtcdUrl] = []
    prefix: Annotated[str, AfterValidator(_etcd_prefix)] = "/service/havip"
    ttl: Annotated[int, _between(2, 3600, "seconds (etcd counts whole seconds)")] = 10
    renew_interval: Annotated[float, _between(0.1, 3600, "seconds")] | None = None   # default ttl / 4
    request_timeout: Annotated[float, _between(0.1, 60, "seconds")] = 1.0
    fence_margin: Annotated[float, _between(0, 3600, "seconds")] = 3.0
    ca: AbsPath | None = None
    cert: AbsPath | None = None
    key: AbsPath | None = None
    user: Annotated[str, _matching(r"[^\s:]{1,128}", "must be 1-128 characters, no spaces or ':'")] | None = None
    password: str | None = None
    password_file: AbsPath | None = None

    @property
    def renew_every(self) -> float:
        """Seconds between keep-alives of the etcd lease."""
        return self.renew_interval if self.renew_interval is not None else self.ttl / 4


def _lease_shorthand(value: object) -> object:
    if isinstance(value, bool):
        return {"enabled": value}
    if not isinstance(value, dict):
        raise ValueError("must be true, false or a mapping (backend, holder; path, orphan_timeout for the "
                         "file backend; endpoints, ttl, ... for etcd)")
    return value


class Sessions(StrictModel):
    """Clearing the sessions a stopped Milvus standalone server left in its embedded etcd,
    after each start of ours (havip.runtime.sessions; docs/milvus-standalone.md)."""

    clear_stale: bool = False
    etcd: EtcdUrl = "http://127.0.0.1:2379"     # the embedded etcd, on the host's network
    root_path: Annotated[str, _matching(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", "must be Milvus' etcd.rootPath, "
                                        "e.g. by-dev (letters, digits, '_.-' between slashes)")] = "by-dev"
    timeout: Annotated[float, _between(1, 600, "seconds")] = 30.0


class Milvus(StrictModel):
    container: Container
    docker: Annotated[str, AfterValidator(_docker_url)] = "unix:///var/run/docker.sock"
    grpc: HostPort = "127.0.0.1:19530"
    data_path: AbsPath | None = None
    check_interval: Seconds = 1.0
    check_timeout: Annotated[float, _between(0, 600, "seconds", above=True)] = 1.0
    rise: Annotated[int, _between(1, 100)] = 2
    fall: Annotated[int, _between(1, 100)] = 2
    start_timeout: Seconds = 120.0
    # docker stop's grace. Measured on Milvus 2.3.5 standalone (docs/milvus-standalone.md,
    # "Stop grace, measured"): a serving Milvus never ended on SIGTERM within 30 s, a kill
    # lost no acknowledged row, and 5 s of SIGTERM made the next start ~5 s faster than a
    # kill: 5 s gave the shortest planned switchover; 30 s added 25 s to each.
    stop_timeout: Annotated[float, _between(0, 3600, "seconds")] = 5.0
    # `lease: false` / `lease: true` are short for {enabled: false} / {}.
    lease: Annotated[Lease, BeforeValidator(_lease_shorthand)] = Lease()
    sessions: Sessions = Sessions()

    @property
    def lease_path(self) -> str | None:
        """Where the storage lease file lives; None when there is none (off, etcd, or no path known)."""
        if not self.lease.enabled or self.lease.backend != "file":
            return None
        if self.lease.path:
            return self.lease.path
        return f"{self.data_path.rstrip('/')}/.havip-lease" if self.data_path else None


class Notify(StrictModel):
    master: Hook | None = None
    backup: Hook | None = None
    fault: Hook | None = None
    stop: Hook | None = None
    timeout: Seconds = 10.0


def _beacon_key(value: str) -> str:
    if len(value.encode()) < 16:
        raise ValueError("must be at least 16 bytes; generate one with `openssl rand -hex 32`")
    return value


class Beacon(StrictModel):
    """The peer beacon (havip.net.beacon, havip.protocol.beacon): signed with HMAC-SHA256.

    Without a key the beacon is off (nothing sent, nothing listened to) and the daemon
    says so at start and in status: an unauthenticated beacon could be forged by anyone
    on the link. `keys` or `key_file` (one key per line): the first signs, all verify.
    """

    keys: Annotated[list[Annotated[str, AfterValidator(_beacon_key)]], Field(max_length=8)] = []
    key_file: AbsPath | None = None

    @field_validator("key_file")
    @classmethod
    def _one_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("keys"):
            raise ValueError("give beacon.keys or beacon.key_file, not both")
        return value

    @property
    def configured(self) -> bool:
        return bool(self.keys) or self.key_file is not None


class Control(StrictModel):
    socket: SocketPath | None = None    # default /run/havip/INSTANCE.sock


class Metrics(StrictModel):
    listen: HostPort | None = None      # "127.0.0.1:9405"; None = off


class Config(StrictModel):
    instance: Instance = "havip"
    interface: Interface
    virtual_router_id: Annotated[int, _between(1, 255)]
    priority: Annotated[int, _between(1, 255)] = 100
    version: Literal[2, 3] = 2
    advert_interval: Annotated[float, _between(0.01, 255, "seconds")] = 1.0
    authentication: Authentication = Authentication()
    virtual_ipaddresses: list[Vip] = Field(min_length=1)
    preempt: bool = True
    preempt_delay: Annotated[float, _between(0, 1000, "seconds")] = 0.0
    # SCHED_RR priority of the loop thread (keepalived's vrrp_rt_priority); 0 = normal
    # scheduling, the default as in keepalived (see havip.daemon.realtime).
    realtime_priority: Annotated[int, _between(0, 99)] = 0
    unicast: Unicast | None = None
    garp: Garp = Garp()
    # VRRPv3 over IPv4: keepalived and RFC 5798 include the pseudo-header; RFC 9568
    # allows the message-only checksum. Receive accepts either (see protocol.codec).
    checksum: Literal["pseudo-header", "message"] = "pseudo-header"
    milvus: Milvus | None = None
    notify: Notify = Notify()
    control: Control = Control()
    metrics: Metrics = Metrics()
    beacon: Beacon = Beacon()

    @property
    def family(self) -> int:
        return self.virtual_ipaddresses[0].version

    @property
    def owner(self) -> bool:
        """Priority 255: this host owns the addresses (RFC 5798 6.1)."""
        return self.priority == 255

    @property
    def control_socket(self) -> str:
        return self.control.socket or f"/run/havip/{self.instance}.sock"
