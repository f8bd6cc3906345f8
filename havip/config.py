"""The YAML configuration: one pydantic model, validated as a whole.

Every problem is reported at once as `path: value: reason`, e.g.
`priority: 300: must be between 1 and 255`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from havip.errors import ConfigError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Strict(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Authentication(_Strict):
    type: Literal["none", "pass"] = "none"
    password: str = ""

    @model_validator(mode="after")
    def _password(self) -> "Authentication":
        if self.type == "pass":
            if not self.password:
                raise ValueError("type pass needs a password")
            if len(self.password.encode()) > 8:
                raise ValueError("password is at most 8 bytes (RFC 2338 simple text auth)")
        return self


class Unicast(_Strict):
    source: IPAddress | None = None
    peers: list[IPAddress] = Field(min_length=1)


class Garp(_Strict):
    delay: Annotated[float, Field(ge=0, le=3600)] = 0.0
    repeat: Annotated[int, Field(ge=1, le=100)] = 5
    interval: Annotated[float, Field(ge=0, le=60)] = 0.1
    refresh: Annotated[float, Field(ge=0, le=86400)] = 0.0   # 0 = no periodic refresh


class Milvus(_Strict):
    container: str
    docker: str = "unix:///var/run/docker.sock"
    grpc: str = "127.0.0.1:19530"
    data_path: str | None = None
    check_interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    check_timeout: Annotated[float, Field(gt=0, le=600)] = 1.0
    rise: Annotated[int, Field(ge=1, le=100)] = 2
    fall: Annotated[int, Field(ge=1, le=100)] = 2
    start_timeout: Annotated[float, Field(gt=0, le=3600)] = 120.0
    stop_timeout: Annotated[float, Field(ge=0, le=3600)] = 30.0


class Notify(_Strict):
    master: str | None = None
    backup: str | None = None
    fault: str | None = None
    stop: str | None = None
    timeout: Annotated[float, Field(gt=0, le=3600)] = 10.0


class Control(_Strict):
    socket: str | None = None           # default /run/havip/INSTANCE.sock


class Metrics(_Strict):
    listen: str | None = None           # "127.0.0.1:9405"; None = off


class Config(_Strict):
    instance: str = ""
    interface: str
    virtual_router_id: Annotated[int, Field(ge=1, le=255)]
    priority: Annotated[int, Field(ge=1, le=255)] = 100
    version: Literal[2, 3] = 2
    advert_interval: float = 1.0
    authentication: Authentication = Authentication()
    virtual_ipaddresses: list[IPInterface] = Field(min_length=1)
    preempt: bool = True
    preempt_delay: Annotated[float, Field(ge=0, le=1000)] = 0.0
    unicast: Unicast | None = None
    garp: Garp = Garp()
    # VRRPv3 over IPv4: keepalived and RFC 5798 include the pseudo-header; RFC 9568
    # allows the message-only checksum. Receive accepts either (see protocol.codec).
    checksum: Literal["pseudo-header", "message"] = "pseudo-header"
    milvus: Milvus | None = None
    notify: Notify = Notify()
    control: Control = Control()
    metrics: Metrics = Metrics()

    @field_validator("advert_interval")
    @classmethod
    def _interval_range(cls, v: float) -> float:
        if not (0.01 <= v <= 255):
            raise ValueError("must be between 0.01 and 255 seconds")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        problems = []
        if self.version == 2:
            if self.advert_interval != int(self.advert_interval):
                problems.append("advert_interval: VRRPv2 carries whole seconds (1-255)")
            if self.virtual_ipaddresses and any(v.version == 6 for v in self.virtual_ipaddresses):
                problems.append("virtual_ipaddresses: VRRPv2 is IPv4 only; use version 3 for IPv6")
        else:
            if self.advert_interval > 40.95:
                problems.append("advert_interval: VRRPv3 carries at most 40.95 s (12 bits of centiseconds)")
            if self.authentication.type != "none":
                problems.append("authentication: VRRPv3 has no authentication (RFC 5798 9)")
        fams = {v.version for v in self.virtual_ipaddresses}
        if len(fams) > 1:
            problems.append("virtual_ipaddresses: mix IPv4 and IPv6 in separate instances")
        if problems:
            raise ValueError("; ".join(problems))
        return self

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


def _format_errors(err: ValidationError, data: object) -> list[str]:
    lines = []
    for e in err.errors():
        loc = [p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        path = ".".join(str(p) for p in loc) or "(top)"
        value = e.get("input")
        if isinstance(value, dict) and e["type"] != "missing":
            shown = "{...}"
        elif e["type"] == "missing":
            shown = "(missing)"
        else:
            shown = repr(value) if isinstance(value, str) else str(value)
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {shown}: {msg}")
    return lines


def parse(data: object, *, source: str = "config", default_instance: str = "havip") -> Config:
    """Validate a decoded YAML document; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"(top): {type(data).__name__}: {source} must be a mapping"])
    data = dict(data)
    data.setdefault("instance", default_instance)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, data)) from None


def load(path: str | Path) -> Config:
    """Read and validate a YAML file; the instance name defaults to the file's stem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    return parse(data, source=str(path), default_instance=path.stem)
