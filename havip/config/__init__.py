"""The YAML configuration, validated as a whole.

Every problem is reported at once as `path: value: reason`, e.g.
`priority: 300: must be between 1 and 255`. Validation runs in two passes: pydantic
checks each field (types, ranges, formats; `schema`), then `checks.cross_checks`
looks at settings that only make sense together (version and interval, address
families, unicast peers, ...). The second pass runs on every top-level field that
passed the first, so one mistake does not hide another. Nothing here touches the
network or the disk except `load`, which reads the one file it is given.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
from pathlib import Path
from typing import get_args

import yaml
from pydantic import BaseModel, ValidationError, create_model

from havip.config.checks import Problem, cross_checks
from havip.config.schema import (Authentication, Config, Control, Garp, IPAddress, IPInterface,
                                 Metrics, Milvus, Notify, Unicast, StrictModel)
from havip.errors import ConfigError
from havip.files import read_bounded

__all__ = ["Authentication", "Config", "ConfigError", "Control", "Garp", "IPAddress", "IPInterface",
           "Metrics", "Milvus", "Notify", "Unicast", "load", "parse", "parse_yaml", "read_yaml"]

_MISSING = object()


# ------------------------------------------------------------------ reporting


SHOWN = 60          # characters of a value shown in an error line
_SHOWN_DEPTH = 3    # nesting levels shown; deeper ones become {...} / [...]


SECRET_KEYS = frozenset({"password", "keys"})     # never echoed: auth password, beacon keys


def _is_secret(path: str) -> bool:
    """A path under a secret key ('vrrp.password', 'beacon.keys[1]', 'beacon.keys.0')."""
    return any(part.split("[", 1)[0] in SECRET_KEYS for part in path.split("."))


def show(value: object, path: str) -> str:
    """A value as the user would write it in YAML ('1111' is a string, 1111 a number).

    Bounded: at most SHOWN characters and _SHOWN_DEPTH levels, whatever the input (a
    10,000-level list or a YAML alias bomb is shown as a short prefix, never walked).
    """
    if value is _MISSING:
        return "(missing)"
    if _is_secret(path) and value:
        return "(hidden)"
    text = _flow(value, 0)
    return text if len(text) <= SHOWN else text[:SHOWN - 3] + "..."


def _flow(value: object, depth: int) -> str:
    """YAML flow style, cut off after about SHOWN characters and _SHOWN_DEPTH levels."""
    if isinstance(value, dict):
        if depth >= _SHOWN_DEPTH:
            return "{...}" if value else "{}"
        items = (f"{_flow(k, depth + 1)}: {_flow(v, depth + 1)}" for k, v in value.items())
        return "{" + _joined(items, len(value)) + "}"
    if isinstance(value, (list, tuple)):
        if depth >= _SHOWN_DEPTH:
            return "[...]" if value else "[]"
        return "[" + _joined((_flow(v, depth + 1) for v in value), len(value)) + "]"
    return _scalar(value)


def _joined(parts, count: int) -> str:
    out, size = [], 0
    for part in parts:
        if size > SHOWN:
            out.append("...")
            break
        out.append(part)
        size += len(part) + 2
    return ", ".join(out)


def _scalar(value: object) -> str:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address,
                          ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        value = str(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)          # validated 3 -> 3.0; show it as the user wrote it
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"(a {value.bit_length()}-bit number)"       # str() of huge ints is refused (and slow)
    elif isinstance(value, str) and len(value) > 4 * SHOWN:
        value = value[:2 * SHOWN]
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    except (yaml.YAMLError, ValueError, TypeError):
        text = repr(value)
    return " ".join(text.removesuffix("\n...\n").split())


def _model_at(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    """The model class that holds the key at the end of `loc`, for 'did you mean'."""
    cls: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int) or cls is None:
            continue
        field = cls.model_fields.get(str(part))
        cls = None
        for t in (field.annotation, *get_args(field.annotation)) if field else ():
            if isinstance(t, type) and issubclass(t, BaseModel):
                cls = t
    return cls


_REASONS = {
    "missing": "required",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a mapping of keys",
    "too_short": "must not be empty",
    "invalid_key": "unknown key; keys are names, not numbers",
}


def _reason(err: dict, root: type[BaseModel]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        cls = _model_at(err["loc"], root)
        near = difflib.get_close_matches(str(err["loc"][-1]), list(cls.model_fields) if cls else [], 1)
        return f"unknown key; did you mean {near[0]}?" if near else "unknown key"
    if kind == "literal_error":
        return f"must be {err['ctx']['expected']}"
    if kind == "string_type" and isinstance(err.get("input"), (int, float)):
        return "must be a string (quote it in YAML)"         # password: 1111, port numbers
    return _REASONS.get(kind, err["msg"].removeprefix("Value error, "))


def field_problems(err: ValidationError, root: type[BaseModel] = Config) -> list[Problem]:
    """(path, value, reason) of each error pydantic found validating a `root`."""
    out = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        value = _MISSING if e["type"] == "missing" else e.get("input")
        out.append((path, value, _reason(e, root)))
    return out


@functools.cache
def _field_model(root: type[BaseModel], name: str) -> type[BaseModel]:
    """A one-field model, to validate a single top-level key on its own."""
    info = root.model_fields[name]
    return create_model(f"_Only_{name}", __base__=StrictModel, **{name: (info.annotation, info)})


def valid_fields(data: dict, root: type[BaseModel] = Config) -> dict:
    """Each top-level field of a `root` that is valid on its own (or defaulted), validated:
    what cross checks can still look at when the whole document is not valid."""
    out = {}
    for name, info in root.model_fields.items():
        if name not in data:
            if not info.is_required():
                out[name] = info.get_default(call_default_factory=True)
            continue
        try:
            out[name] = getattr(_field_model(root, name).model_validate({name: data[name]}), name)
        except ValidationError:
            pass
    return out


MAX_PROBLEMS = 100      # lines listed; 300,000 bad list items took 20 s to format and 29 MB to log


def format_problems(problems: list[Problem], root: type[BaseModel] = Config) -> list[str]:
    """`path: value: reason` lines, in the order of `root`'s top-level keys; at most
    MAX_PROBLEMS of them and one saying how many more there were."""
    order = {name: i for i, name in enumerate(root.model_fields)}
    ranked = sorted(problems, key=lambda p: order.get(p[0].split(".", 1)[0], len(order)))
    return _capped([f"{_printable(path)}: {show(value, path)}: {reason}" for path, value, reason
                    in ranked[:MAX_PROBLEMS + 1]], len(ranked))


def _capped(lines: list[str], total: int | None = None) -> list[str]:
    """At most MAX_PROBLEMS lines, and one saying how many more there were."""
    total = len(lines) if total is None else total
    if total <= MAX_PROBLEMS:
        return lines
    return lines[:MAX_PROBLEMS] + [f"... and {total - MAX_PROBLEMS} more problems not listed"]


def _printable(text: str) -> str:
    """A key as one line: control characters (a newline in a quoted YAML key) escaped."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# ------------------------------------------------------------------ entry points


def parse(data: object, *, source: str = "config", default_instance: str = "havip") -> Config:
    """Validate a decoded YAML document; raise ConfigError listing every problem."""
    if data is None:
        raise ConfigError([f"{source}: (empty): no settings; expected a mapping of key: value lines"])
    if not isinstance(data, dict):
        shown = show(data, "")
        raise ConfigError([f"{source}: {shown}: must be a mapping of key: value lines, "
                           f"not a {type(data).__name__}"])
    data = {"instance": default_instance, **data}
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        problems = field_problems(err) + cross_checks(valid_fields(data))
        raise ConfigError(format_problems(problems)) from None
    problems = cross_checks(dict(config))
    if problems:
        raise ConfigError(format_problems(problems))
    return config


class _Loader(yaml.SafeLoader):
    """SafeLoader that records duplicate keys; PyYAML would silently keep the last one."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[str] = []
        self._merged: dict[int, int] = {}
        self._merged_keys = 0

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[object, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first:
                shown = value_node.value if isinstance(value_node, yaml.ScalarNode) else "{...}"
                shown = "(hidden)" if key_node.value in SECRET_KEYS else shown
                self.duplicates.append(f"{_printable(str(key_node.value))}: {_printable(str(shown))[:60]}: "
                                       f"duplicate key on line {line} "
                                       f"(first on line {first[key_node.value]}); remove one")
            first.setdefault(key_node.value, line)
        return super().construct_mapping(node, deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # PyYAML copies every merged key into the mapping that merges it: `<<: [*a, *a]`
        # on each of 40 lines is 2**40 keys from 2 KiB, and 400 lines that each merge a
        # 100-key mapping 99 times took 4 s. Count the copies first, for the whole document.
        if any(key.tag == _MERGE for key, _ in node.value):
            self._merged_keys += _merged_size(node, self._merged)
            if self._merged_keys > MAX_MERGED:
                raise yaml.constructor.ConstructorError(None, None, f"merge keys (<<) expand to more than "
                                                        f"{MAX_MERGED} keys", node.start_mark)
        super().flatten_mapping(node)


MAX_MERGED = 10_000     # keys in mappings with merge keys, once merged; a configuration has a few dozen
_MERGE = "tag:yaml.org,2002:merge"


def _merged_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many keys the mapping `node` has once its merge keys are expanded (memoised by node)."""
    if not isinstance(node, yaml.MappingNode):
        return 0
    if id(node) not in sizes:
        sizes[id(node)] = 0                 # a mapping that merges itself adds nothing
        total = 0
        for key, value in node.value:
            if key.tag != _MERGE:
                total += 1
            else:
                total += sum(_merged_size(sub, sizes) for sub in
                             (value.value if isinstance(value, yaml.SequenceNode) else [value]))
        sizes[id(node)] = total
    return sizes[id(node)]


MAX_BYTES = 1 << 20     # a configuration is a few hundred bytes; refuse to read a disk image


def read_yaml(path: str | Path) -> tuple[object, list[str]]:
    """A file's YAML document and its duplicate-key problems; any failure is a ConfigError."""
    path = Path(path)
    try:
        raw = read_bounded(path, MAX_BYTES)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError([f"{path}: cannot read: larger than {MAX_BYTES} bytes; not a havip configuration"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}: line {line}: byte {raw[exc.start]:#04x} is not UTF-8: "
                           "save the file as UTF-8"]) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str = "config") -> tuple[object, list[str]]:
    """YAML text -> (document, duplicate-key problems); every failure is one ConfigError line."""
    loader = None
    try:
        loader = _Loader(text)          # the reader refuses NUL and other control characters here
        return loader.get_single_data(), loader.duplicates
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise ConfigError([f"{source}: line {line}: character {char!r} is not allowed in YAML "
                           "(control characters such as NUL)"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown place)"
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError([f"{source}: {where}: invalid YAML: {problem}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: invalid YAML: nested too deeply; a havip configuration has "
                           "at most a few levels"]) from None
    except (ValueError, TypeError, OverflowError) as exc:
        # PyYAML's constructors: a 5,000-digit integer, a timestamp such as 2024-13-45.
        problem = " ".join(str(exc).split())[:200]
        raise ConfigError([f"{source}: invalid YAML value: {problem}"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def load(path: str | Path) -> Config:
    """Read and validate a YAML file; the instance name defaults to the file's stem."""
    path = Path(path)
    data, duplicates = read_yaml(path)
    try:
        config = parse(data, source=str(path), default_instance=path.stem)
    except ConfigError as err:
        raise ConfigError(_capped(duplicates) + err.problems) from None
    if duplicates:
        raise ConfigError(_capped(duplicates))
    return config
