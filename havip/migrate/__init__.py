"""`havip import-keepalived`: keepalived.conf -> havip YAML, one document per vrrp_instance.

Nothing is dropped silently. Every statement is translated, or listed in
`Result.untranslated` (havip cannot do it, or a human must decide: the CLI exits
non-zero unless --partial), or in `Result.notes` (translated, but the behaviour
differs in a way worth reading, such as the classic stop_docker.sh that runs
`docker start`). Each entry reads `LINE: statement: why`.

    result = convert(Path("keepalived.conf").read_text(), script_reader=read_script)
    paths = write(result, "/etc/havip")
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from havip.files import read_bounded
from havip.migrate.instance import PLACEHOLDER, Ctx, ScriptReader, skip_tree, translate
from havip.migrate.keywords import INFO, WHY
from havip.migrate.syntax import Node, parse_conf

__all__ = ["PLACEHOLDER", "Result", "ScriptReader", "convert", "read_script", "render", "write"]

_GLOBAL_GARP = ("vrrp_garp_master_repeat", "vrrp_garp_master_refresh", "vrrp_garp_interval", "vrrp_rt_priority")


@dataclass
class Result:
    """What `convert` produced; `configs` maps a file stem to a havip YAML document."""

    source: str
    configs: dict[str, dict] = field(default_factory=dict)
    untranslated: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comments: dict[str, list[str]] = field(default_factory=dict)   # per stem, for render()

    @property
    def complete(self) -> bool:
        """Nothing needs a human: the CLI may exit 0 without --partial."""
        return not self.untranslated


MAX_SCRIPT = 1 << 20     # a check or notify script is a few lines


def read_script(path: str) -> str | None:
    """The default script reader: the text of a regular file of at most MAX_SCRIPT bytes, or
    None if it cannot be read (a keepalived.conf may name /dev/zero or a FIFO as a script)."""
    try:
        raw = read_bounded(path, MAX_SCRIPT)
    except OSError:
        return None
    return None if len(raw) > MAX_SCRIPT else raw.decode("utf-8", errors="replace")


def convert(text: str, *, source: str = "keepalived.conf",
            script_reader: ScriptReader | None = None) -> Result:
    """Translate keepalived.conf text. `script_reader(path)` returns a script's text or None;
    without one, scripts are not read (notify hooks are kept, track scripts untranslated)."""
    nodes, problems = parse_conf(text)
    scripts = {n.words[1]: n for n in nodes
               if n.key == "vrrp_script" and len(n.words) == 2 and n.children is not None}
    ctx = Ctx(scripts=scripts, reader=script_reader)
    for node in nodes:
        if node.key == "global_defs":
            _globals(ctx, node)
    result = Result(source, untranslated=list(problems))
    for node in nodes:
        if node.key == "vrrp_instance" and node.children is not None:
            stem = _stem(node.words[1] if len(node.words) > 1 else "", result.configs)
            result.configs[stem] = translate(ctx, node, stem)
        elif node.key not in ("global_defs", "vrrp_script") or node.children is None:
            skip_tree(ctx, node, WHY.get(node.key, "havip has no equivalent"))
    for name, node in scripts.items():
        if name not in ctx.used_scripts:
            ctx.log("note", node, "no vrrp_instance tracks this script; ignored")
    if not result.configs:
        ctx.log("untranslated", Node(0, (source,)), "no vrrp_instance found; nothing to convert")
    _collect(result, ctx)
    return result


def _globals(ctx: Ctx, block: Node) -> None:
    for node in block.children or ():
        if node.key == "vrrp_version" and node.words[1:] in (("2",), ("3",)):
            ctx.version = int(node.words[1])
        elif node.key in _GLOBAL_GARP and node.children is None:
            ctx.defaults.append(node)
        elif node.key in INFO:
            ctx.log("note", node, INFO[node.key])
        else:
            skip_tree(ctx, node, WHY.get(node.key, "havip has no equivalent"))


def _stem(name: str, taken: dict) -> str:
    """A file stem (and havip instance name) from a keepalived instance name."""
    base = re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("._-") or "instance"
    stem, n = base, 1
    while stem in taken:
        n += 1
        stem = f"{base}-{n}"
    return stem


def _collect(result: Result, ctx: Ctx) -> None:
    """Sort the log by line, drop repeats, and split it into the Result's lists."""
    entries = sorted(ctx.entries, key=lambda e: e[2])
    for kind, _, _, text in entries:
        target = result.untranslated if kind == "untranslated" else result.notes
        if text not in target:
            target.append(text)
    for stem in result.configs:
        lines = [f"{kind}: {text}" for kind, s, _, text in entries if s in (stem, None)]
        result.comments[stem] = list(dict.fromkeys(lines))


def render(result: Result, stem: str) -> str:
    """One havip YAML file, with what was not translated as comments on top."""
    lines = [f"# havip configuration for instance {stem}, converted from {result.source}",
             "# by `havip import-keepalived`. Check it with `havip check-config`."]
    if result.comments.get(stem):
        lines += ["#", "# Read before use:"] + [f"#   {c}" for c in result.comments[stem]]
    body = yaml.safe_dump(result.configs[stem], sort_keys=False, default_flow_style=False)
    return "\n".join(lines) + "\n" + body


def write(result: Result, out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write `<stem>.yaml` for each converted instance; return the paths written.

    Raises FileExistsError, before writing anything, if a file exists and not `overwrite`;
    OSError if the folder or a file cannot be written, and then no file is left behind
    (each is written beside its place and renamed once all are written).
    """
    out = Path(out_dir)
    paths = {stem: out / f"{stem}.yaml" for stem in result.configs}
    for path in paths.values():
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if path.exists() and not overwrite:
            raise FileExistsError(errno.EEXIST, "refusing to overwrite", str(path))
    out.mkdir(parents=True, exist_ok=True)
    temps: list[Path] = []
    try:
        for stem, path in paths.items():
            tmp = path.with_name(f".{path.name}.tmp")
            temps.append(tmp)
            tmp.write_text(render(result, stem), encoding="utf-8")
        for tmp, path in zip(temps, paths.values()):
            tmp.replace(path)
    finally:
        for tmp in temps:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass                # not ours to remove (e.g. a directory of that name)
    return list(paths.values())
