"""Translate one keepalived `vrrp_instance` block (and the scripts it uses) to havip.

Every statement is translated, or logged as `untranslated` (a human must act) or as a
`note` (translated, but read this). The docker scripts of the classic Milvus recipe
become the `milvus` section: havip starts, checks and stops the container itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from havip import config
from havip.config.schema import PLACEHOLDER      # written where the scripts hold `<docker id>`
from havip.errors import ConfigError
from havip.migrate.keywords import INFO, NOTIFY, ORDER, SCRIPT_CHECKS, SIMPLE, WEIGHT, WHY
from havip.migrate.scripts import (DockerUse, docker_uses, first_word, is_placeholder, other_commands,
                                   split_command)
from havip.migrate.syntax import Node

ScriptReader = Callable[[str], "str | None"]


@dataclass
class Ctx:
    """One conversion: the vrrp_script blocks, global defaults, and what was logged."""

    scripts: dict[str, Node]
    reader: ScriptReader | None
    version: int | None = None                                   # global_defs vrrp_version
    defaults: list[Node] = field(default_factory=list)           # global garp settings
    entries: list[tuple[str, str | None, int, str]] = field(default_factory=list)
    used_scripts: set[str] = field(default_factory=set)

    def log(self, kind: str, node: Node, why: str, stem: str | None = None) -> None:
        """Record `LINE: statement: why` as "untranslated" or "note" (stem None: global)."""
        self.entries.append((kind, stem, node.line, f"{node.line}: {node.text}: {why}"))

    def read(self, path: str) -> str | None:
        return self.reader(path) if self.reader and path.startswith("/") else None


@dataclass
class _Instance:
    ctx: Ctx
    stem: str
    values: dict[str, object] = field(default_factory=dict)       # dotted havip path -> value
    containers: list[tuple[str, Node]] = field(default_factory=list)
    seen: dict[str, Node] = field(default_factory=dict)           # keepalived keyword -> node

    def skip(self, node: Node, why: str) -> None:
        self.ctx.log("untranslated", node, why, self.stem)

    def note(self, node: Node, why: str) -> None:
        self.ctx.log("note", node, why, self.stem)


def skip_tree(ctx: Ctx, node: Node, why: str, stem: str | None = None) -> None:
    """Report a statement and, line by line, everything inside it."""
    ctx.log("untranslated", node, why, stem)
    for child in node.children or ():
        skip_tree(ctx, child, f"inside the untranslated {node.key} block", stem)


def translate(ctx: Ctx, block: Node, stem: str) -> dict:
    """One vrrp_instance block -> one havip YAML document (validated; problems logged)."""
    inst = _Instance(ctx, stem)
    for node in ctx.defaults:
        _simple(inst, node)
    for node in block.children or ():
        _statement(inst, node)
    _finish(inst, block)
    document = _nest(inst.values)
    try:
        config.parse(document, source=stem, default_instance=stem)
    except ConfigError as err:
        for problem in err.problems:
            if not problem.startswith(f"milvus.container: {PLACEHOLDER}:"):     # reported where it came from
                inst.skip(block, f"havip would reject the result: {problem}")
    return document


# ------------------------------------------------------------------ statements


def _statement(inst: _Instance, node: Node) -> None:
    key = node.key
    inst.seen[key] = node
    if key in SIMPLE:
        _simple(inst, node)
    elif key == "virtual_ipaddress":
        _vips(inst, node)
    elif key == "unicast_peer":
        inst.values["unicast.peers"] = [c.words[0] for c in _entries(inst, node)]
        for child in _entries(inst, node, report=False):
            if len(child.words) > 1:
                inst.skip(child, "per-peer options are not translated")
    elif key == "authentication":
        _auth(inst, node)
    elif key == "track_script":
        _track_script(inst, node)
    elif key in NOTIFY:
        _notify(inst, node)
    elif key == "nopreempt":
        inst.values["preempt"] = False
    elif key == "state":
        inst.note(node, "havip starts as backup (as master only with priority 255) and elects by "
                        "priority; state is informational")
    elif key in INFO:
        inst.note(node, INFO[key])
    else:
        skip_tree(inst.ctx, node, WHY.get(key, "havip has no equivalent"), inst.stem)


def _simple(inst: _Instance, node: Node) -> None:
    key = node.key.removeprefix("vrrp_")            # global_defs vrrp_garp_* are defaults
    path, kind = SIMPLE[key]
    if len(node.words) != 2 or node.children is not None:
        inst.skip(node, "expected exactly one value")
        return
    try:
        value = kind(node.words[1])
    except ValueError:
        inst.skip(node, f"{node.words[1]} is not a {'whole ' if kind is int else ''}number")
        return
    inst.values[path] = int(value) if kind is float and value.is_integer() else value


def _entries(inst: _Instance, block: Node, report: bool = True) -> list[Node]:
    """The plain lines of a list block (addresses, peers); nested blocks are reported."""
    out = []
    for child in block.children or ():
        if child.children is None and child.words:
            out.append(child)
        elif report:
            skip_tree(inst.ctx, child, f"unexpected block inside {block.key}", inst.stem)
    return out


def _vips(inst: _Instance, node: Node) -> None:
    vips = []
    for child in _entries(inst, node):
        addr, options = child.words[0], child.words[1:]
        if "/" not in addr:
            # keepalived's default prefix is the host prefix; havip writes it out.
            try:
                addr += "/32" if ipaddress.ip_address(addr).version == 4 else "/128"
            except ValueError:
                pass
        vips.append(addr)
        if options:
            inst.skip(child, f"options `{' '.join(options)}` are not translated; "
                             "havip adds the address on `interface` with no options")
    inst.values["virtual_ipaddresses"] = vips


def _auth(inst: _Instance, node: Node) -> None:
    for child in node.children or ():
        if child.key == "auth_type" and child.words[1:] == ("PASS",):
            inst.values["authentication.type"] = "pass"
        elif child.key == "auth_pass" and len(child.words) == 2:
            password = child.words[1]
            if len(password.encode()) > 8:
                inst.note(child, "keepalived sends only the first 8 bytes; so does the translation")
                password = password.encode()[:8].decode(errors="ignore")
            inst.values["authentication.password"] = password
        elif child.key == "auth_type":
            inst.skip(child, "havip supports only PASS (simple password) authentication")
        else:
            inst.skip(child, "havip has no equivalent")


def _notify(inst: _Instance, node: Node) -> None:
    state, command = NOTIFY[node.key], " ".join(node.words[1:])
    path = first_word(command)
    uses = _script_uses(inst, node, command)
    if uses is None:
        inst.skip(node, f"could not read {path}; kept as notify.{state}. If it starts or stops "
                        "the Milvus container, replace it by a milvus section")
    if not uses:
        _hook(inst, node, state, split_command(command))
        return
    name = PurePosixPath(path).name
    verbs = {verb for verb, _ in uses}
    _add_containers(inst, node, uses, name)
    if state == "master" and not verbs & {"start", "restart"}:
        inst.skip(node, f"{name} does not run `docker start`; havip starts the container on becoming master")
    elif state != "master" and "start" in verbs and not verbs & {"stop", "kill"}:
        inst.note(node, f"{name} runs `docker start`, not `docker stop`: havip stops the container "
                        "itself on leaving master")
    else:
        action = "starts" if state == "master" else "stops"
        inst.note(node, f"{name} {action} the container; havip does this itself (milvus section)")


def _hook(inst: _Instance, node: Node, state: str, words: list[str]) -> None:
    """A notify script that is not about docker stays a hook (config.Notify)."""
    if not words:
        inst.skip(node, "no script given")
        return
    inst.values[f"notify.{state}"] = words[0]
    if words[1:] == [state]:
        inst.note(node, f"havip runs the hook as `{words[0]} {state} PRIORITY INSTANCE`: "
                        "the state is still the first argument")
    elif words[1:]:
        inst.skip(node, f"havip runs hooks as `PATH STATE PRIORITY INSTANCE`; the arguments "
                        f"`{' '.join(words[1:])}` are not passed")


def _track_script(inst: _Instance, node: Node) -> None:
    for child in node.children or ():
        script = inst.ctx.scripts.get(child.key)
        if script is None:
            inst.skip(child, f"no vrrp_script named {child.key}")
            continue
        inst.ctx.used_scripts.add(child.key)
        if child.words[1:2] == ("weight",) and child.words[2:3] != ("0",):
            inst.skip(child, WEIGHT)
        elif len(child.words) > 1 and child.words[1] != "weight":
            inst.skip(child, "track_script options are not translated")
        _vrrp_script(inst, script)


def _vrrp_script(inst: _Instance, block: Node) -> None:
    """A tracked vrrp_script that inspects the container becomes the milvus section."""
    command = next((" ".join(c.words[1:]) for c in block.children or () if c.key == "script"), "")
    uses = _script_uses(inst, block, command)
    if uses is None:
        inst.skip(block, f"could not read {first_word(command)} to see what it checks")
    elif not uses:
        inst.skip(block, "havip runs its own Milvus checks (container and gRPC); "
                         "other check scripts are not supported")
    else:
        _add_containers(inst, block, uses, PurePosixPath(first_word(command)).name)
        inst.note(block, "havip checks the container and Milvus's gRPC health itself")
    for child in block.children or ():
        if child.key == "weight":
            if child.words[1:2] != ("0",):       # weight 0 means FAULT on failure, as in havip
                inst.skip(child, WEIGHT)
        elif child.key == "script":
            continue
        elif not uses:
            inst.skip(child, f"inside the untranslated {block.key} block")
        elif child.key in SCRIPT_CHECKS and len(child.words) == 2:
            inst.values[f"milvus.{SCRIPT_CHECKS[child.key]}"] = _number(child.words[1])
        else:
            inst.skip(child, "havip has no equivalent")


# ------------------------------------------------------------------ scripts


def _script_uses(inst: _Instance, node: Node, command: str) -> list[DockerUse] | None:
    """Docker uses of a command line and of the script it runs; None if unreadable."""
    uses = docker_uses(command)
    path = first_word(command)
    if not path.startswith("/"):
        return uses                          # an inline command: nothing to read
    text = inst.ctx.read(path)
    if text is None:
        return uses or None
    found = docker_uses(text)
    others = other_commands(text)
    if found and others:
        inst.skip(node, f"{path} also runs `{others[0]}`; havip takes over only its docker commands")
    return uses + found


def _add_containers(inst: _Instance, node: Node, uses: list[DockerUse], name: str) -> None:
    for _, container in uses:
        if is_placeholder(container):
            inst.skip(node, f"{name} names the container as the placeholder `{container}`; "
                            f"set milvus.container (--partial writes {PLACEHOLDER}, which check-config "
                            "rejects until it is set)")
            container = PLACEHOLDER
        inst.containers.append((container, node))


# ------------------------------------------------------------------ the whole instance


def _finish(inst: _Instance, block: Node) -> None:
    """keepalived's implicit defaults and contradictions, made explicit."""
    v, seen = inst.values, inst.seen
    vips = v.get("virtual_ipaddresses") or []
    if "version" not in v:
        # keepalived: an IPv6 instance is VRRPv3 unless the instance says otherwise.
        v["version"] = 3 if any(":" in str(a) for a in vips) else inst.ctx.version or 2
    master = "state" in seen and seen["state"].words[1:2] == ("MASTER",)
    if "priority" not in v:
        v["priority"] = 255 if master else 100
        if master:
            inst.note(seen["state"], "no priority: keepalived makes a MASTER the address owner (255)")
    v.setdefault("advert_interval", 1)
    if v.get("preempt") is False and (master or v["priority"] == 255):
        v["preempt"] = True
        why = "an address owner (priority 255)" if v["priority"] == 255 else "an initial state MASTER"
        inst.note(seen["nopreempt"], f"keepalived ignores nopreempt with {why}; so does the translation")
    _finish_auth(inst)
    _finish_milvus(inst, block)


def _finish_auth(inst: _Instance) -> None:
    v, node = inst.values, inst.seen.get("authentication")
    if node is None or not any(k.startswith("authentication.") for k in v):
        return
    why = None
    if v["version"] == 3:
        why = "keepalived ignores authentication with VRRPv3; so does the translation"
    elif v.get("authentication.type") != "pass" or not v.get("authentication.password"):
        why = "keepalived ignores authentication without both auth_type PASS and auth_pass"
    if why:
        v.pop("authentication.type", None)
        v.pop("authentication.password", None)
        inst.note(node, why)


def _finish_milvus(inst: _Instance, block: Node) -> None:
    names = list(dict.fromkeys(name for name, _ in inst.containers))
    if not names:
        return
    inst.values["milvus.container"] = names[0]
    if len(names) > 1:
        inst.skip(block, f"the scripts name different containers ({', '.join(names)}); "
                         f"havip manages one: set milvus.container (--partial writes {names[0]})")


def _nest(values: dict[str, object]) -> dict:
    out: dict = {}
    for path in ORDER:
        if path in values:
            top, _, sub = path.partition(".")
            if sub:
                out.setdefault(top, {})[sub] = values[path]
            else:
                out[top] = values[path]
    return out


def _number(text: str) -> float | int | str:
    try:
        value = float(text)
    except ValueError:
        return text                         # left for config.parse to report
    return int(value) if value.is_integer() else value
