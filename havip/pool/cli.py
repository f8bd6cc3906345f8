"""`havip pool run | check-config | render` and `havipctl pool status`.

Kept apart from havip.cli and havip.ctl (which only add these groups), so the pool
merges and evolves on its own.
"""

from __future__ import annotations

import json
import sys

import click

from havip.errors import ConfigError

EXIT_CONFIG = 2
# Not /etc/havip/*.yaml: havipctl takes every YAML file there for a VRRP instance.
DEFAULT_CONFIG = "/etc/havip/pool/pool.yaml"


def _load(path: str):
    from havip.pool.config import load

    try:
        return load(path)
    except ConfigError as exc:
        for line in exc.problems:
            click.echo(line if line.startswith(str(path)) else f"{path}: {line}", err=True)
        sys.exit(EXIT_CONFIG)


@click.group()
def pool() -> None:
    """The read pool: nginx spreads Milvus reads over healthy read nodes, writes go to the writer."""


@pool.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False), default=DEFAULT_CONFIG)
@click.option("--nginx/--no-nginx", "with_nginx", default=True, show_default=True,
              help="Also render the config and have `nginx -t` check it.")
def check_config(file: str, with_nginx: bool) -> None:
    """Validate FILE; print every problem as `path: value: reason`, exit 2 if any."""
    cfg = _load(file)
    if with_nginx:
        import tempfile

        from havip.pool.nginx import Nginx, NginxInvalid
        from havip.pool.render import render

        with tempfile.TemporaryDirectory(prefix="havip-pool-check") as tmp:
            ng = Nginx(cfg.nginx.binary, tmp)
            ng.prepare()
            conf = ng.prefix / "nginx.conf"
            conf.write_text(render(cfg, {m: True for m in cfg.read_nodes}, prefix=tmp, source=file))
            try:
                ng.test(conf)
            except NginxInvalid as exc:
                click.echo(f"{file}: nginx -t refuses the rendered config: {exc}", err=True)
                sys.exit(EXIT_CONFIG)
            except Exception as exc:  # noqa: BLE001 - e.g. no nginx binary: say so, exit non-zero
                click.echo(f"{file}: cannot run nginx -t: {exc}", err=True)
                sys.exit(1)
    click.echo(f"{file}: ok (instance {cfg.instance}, {len(cfg.read_nodes)} read nodes, writer {cfg.writer}, "
               f"listen {cfg.listen})")


@pool.command("render")
@click.argument("file", type=click.Path(dir_okay=False), default=DEFAULT_CONFIG)
@click.option("--down", "down", multiple=True, metavar="ADDRESS", help="Render this member as down (repeatable).")
def render_cmd(file: str, down: tuple[str, ...]) -> None:
    """Print the nginx config the pool would run (every member in, except --down ones)."""
    from havip.pool.config import canonical
    from havip.pool.render import render

    cfg = _load(file)
    out = {canonical(d) for d in down}
    click.echo(render(cfg, {m: canonical(m) not in out for m in cfg.read_nodes}, source=file), nl=False)


@pool.command("run")
@click.option("-c", "--config", "file", default=DEFAULT_CONFIG, show_default=True, type=click.Path(dir_okay=False))
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto", show_default=True)
def run(file: str, log_level: str, log_format: str) -> None:
    """Run the pool in the foreground: checks, nginx, status (systemd: havip-pool.service)."""
    from havip import logs
    from havip.pool.checker import MemberChecker
    from havip.pool.config import load
    from havip.pool.daemon import PoolDaemon
    from havip.pool.nginx import Nginx
    from havip.pool.probe import GrpcCheck
    from havip.pool.status import PoolMetrics

    cfg = _load(file)
    log = logs.configure(log_level, log_format).bind(pool=cfg.instance)
    metrics = PoolMetrics(cfg.instance)
    daemon = PoolDaemon(cfg, Nginx(cfg.nginx.binary, cfg.nginx.prefix), log=log, metrics=metrics, source=file)
    if cfg.metrics.listen:
        try:
            metrics.serve(cfg.metrics.listen)
        except OSError as exc:
            log.error("startup_failed", error=f"metrics.listen {cfg.metrics.listen}: {exc}")
            sys.exit(1)

    def make_checker(address: str, c) -> MemberChecker:
        check = GrpcCheck(address, c.check.kind, c.check.timeout, collections=tuple(c.check.collections),
                          db=c.check.db)
        return MemberChecker(address, check, c.check.interval, daemon.post)

    daemon.install_signals()
    log.info("starting", members=list(cfg.read_nodes), writer=cfg.writer, listen=cfg.listen)
    code = daemon.run(make_checker, reload_config=lambda: load(file))
    metrics.close()
    sys.exit(code)


# ------------------------------------------------------------------ havipctl pool


@click.group("pool")
def ctl_pool() -> None:
    """The read pool on this host."""


@ctl_pool.command("status")
@click.option("--json", "as_json", is_flag=True, help="The status as one JSON object (stable keys).")
@click.option("-c", "--config", "file", type=click.Path(dir_okay=False),
              help=f"The pool's config (default {DEFAULT_CONFIG} if it exists), to find its status file.")
@click.option("--state", "state", type=click.Path(dir_okay=False), help="The status file itself.")
def ctl_status(as_json: bool, file: str | None, state: str | None) -> None:
    """Each member: in or out of the pool, why, since when, requests routed.

    Exit status: 0 every member in, 1 some member out (or nginx not in sync), 3 not
    running, 4 unknown.
    """
    from pathlib import Path

    from havip.pool import status

    if state is None:
        path = file or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
        if path is not None:
            state = _load(path).state_path
        else:
            state = "/run/havip/pool.json"
    try:
        st = status.read(state)
    except status.NotRunning as exc:
        click.echo(str(exc), err=True)
        sys.exit(status.EXIT_NOT_RUNNING)
    click.echo(json.dumps(st, sort_keys=True) if as_json else status.render(st))
    sys.exit(status.exit_code(st))
