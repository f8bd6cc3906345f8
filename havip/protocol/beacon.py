"""The peer beacon on the wire: bytes <-> `PeerState` or the reason it was refused. Pure.

A datagram is

    b"HVB2" | HMAC-SHA256 (32 bytes) | body: one flat JSON object, printable ASCII

and the MAC covers everything but itself (magic and body) with the shared key
(`beacon.keys` or `beacon.key_file`; the first key signs, any configured key verifies,
so a key can be rolled without a moment where the hosts disagree). The body says
who sends (`from`, its source address, checked against the packet's source), when
(`ts`, wall-clock seconds, strictly increasing per sender: the replay guard) and what
it is doing. `decode` checks, cheapest first: size, magic, MAC (constant time), then
the bytes (printable ASCII, one flat object: nesting is refused before the JSON parser
sees it), then the exact schema. It never raises.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass

MAGIC = b"HVB2"
MAC_LEN = 32
MAX_BYTES = 512                 # a real beacon is about 250 bytes
MAX_KEYS = 8
MIN_KEY_BYTES = 16
STATES = frozenset({"init", "backup", "master", "fault", "stopped"})
CONTAINER = frozenset({"stopped", "waiting", "leasing", "starting", "running", "stopping"})
_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")       # as config.schema.Instance
_ADDRESS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
FIELDS = ("from", "ts", "instance", "vrid", "state", "priority", "healthy", "paused", "container")


@dataclass(frozen=True, slots=True)
class PeerState:
    """What an authenticated peer says of itself."""

    src: str
    instance: str
    vrid: int
    state: str
    priority: int
    healthy: bool | None
    paused: bool
    container: str | None
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class Refused:
    """A datagram that is not an acceptable beacon: `reason` is counted, `detail` logged."""

    reason: str
    detail: str = ""


class Keyring:
    """The shared keys: the first signs, any verifies (rolling, see docs/operations.md)."""

    def __init__(self, keys: list[bytes] | tuple[bytes, ...]):
        keys = tuple(keys)
        if not keys:
            raise ValueError("no beacon key")
        if len(keys) > MAX_KEYS:
            raise ValueError(f"{len(keys)} beacon keys: at most {MAX_KEYS}")
        for key in keys:
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"a beacon key of {len(key)} bytes: at least {MIN_KEY_BYTES} are needed")
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self.keys[0], data, hashlib.sha256).digest()

    def verify(self, data: bytes, mac: bytes) -> bool:
        ok = False
        for key in self.keys:        # every key, always: the time does not tell which matched
            ok |= hmac.compare_digest(hmac.new(key, data, hashlib.sha256).digest(), mac)
        return ok


def encode(info: dict, *, keyring: Keyring, src: str, ts: float) -> bytes:
    """A signed beacon saying `info` (instance, vrid, state, priority, healthy, paused,
    container), sent from `src` at wall-clock time `ts`."""
    body = json.dumps({"from": src, "ts": round(ts, 6), **{k: info[k] for k in FIELDS[2:]}},
                      separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    return MAGIC + keyring.sign(MAGIC + body) + body


def decode(data: bytes, keyring: Keyring) -> PeerState | Refused:
    """The sender's state, or why the datagram is refused. Never raises."""
    try:
        return _decode(bytes(data), keyring)
    except Exception as exc:  # noqa: BLE001 - a bug here costs one datagram, never the daemon
        return Refused("internal_error", f"{type(exc).__name__}: {exc}"[:200])


def _decode(data: bytes, keyring: Keyring) -> PeerState | Refused:
    if len(data) > MAX_BYTES:
        return Refused("too_big", f"{len(data)} bytes; a beacon has at most {MAX_BYTES}")
    if len(data) < len(MAGIC) + MAC_LEN + 2 or not data.startswith(MAGIC):
        return Refused("not_a_beacon", "no havip beacon header (HVB2)")
    mac, body = data[len(MAGIC):len(MAGIC) + MAC_LEN], data[len(MAGIC) + MAC_LEN:]
    if not keyring.verify(MAGIC + body, mac):
        return Refused("bad_mac", "HMAC-SHA256 does not verify with any configured beacon key "
                                  "(the hosts' keys differ, or it is forged)")
    # Authenticated from here on; still checked as strictly (a peer may run other code).
    if not _PRINTABLE.fullmatch(body) or body.count(b"{") != 1 or body.count(b"}") != 1 or b"[" in body:
        return Refused("malformed", "the body must be one flat JSON object in printable ASCII")
    try:
        msg = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        return Refused("malformed", f"not JSON: {exc}"[:200])
    problem = _schema_problem(msg)
    if problem:
        return Refused("bad_field", problem)
    return PeerState(src=msg["from"], instance=msg["instance"], vrid=msg["vrid"], state=msg["state"],
                     priority=msg["priority"], healthy=msg["healthy"], paused=msg["paused"],
                     container=msg["container"], ts=float(msg["ts"]))


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice")
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def _is_int(value: object, lo: int, hi: int) -> bool:
    return type(value) is int and lo <= value <= hi


def _schema_problem(msg: object) -> str | None:
    """Exactly the fields of FIELDS, each of its type and range; None when all is well."""
    if not isinstance(msg, dict):
        return "not an object"
    if set(msg) != set(FIELDS):
        missing, extra = sorted(set(FIELDS) - set(msg)), sorted(set(msg) - set(FIELDS))
        return f"fields missing {missing} or unknown {extra[:5]}"
    ts = msg["ts"]
    checks = (
        ("from", isinstance(msg["from"], str) and _ADDRESS.fullmatch(msg["from"]) is not None),
        ("ts", type(ts) in (int, float) and math.isfinite(ts) and ts > 0),
        ("instance", isinstance(msg["instance"], str) and _INSTANCE.fullmatch(msg["instance"]) is not None),
        ("vrid", _is_int(msg["vrid"], 1, 255)),
        ("state", isinstance(msg["state"], str) and msg["state"] in STATES),
        ("priority", _is_int(msg["priority"], 0, 255)),
        ("healthy", msg["healthy"] is None or type(msg["healthy"]) is bool),
        ("paused", type(msg["paused"]) is bool),
        ("container", msg["container"] is None or isinstance(msg["container"], str) and msg["container"] in CONTAINER),
    )
    bad = [name for name, ok in checks if not ok]
    return f"bad value for {', '.join(bad)}" if bad else None
