"""`havip`: run the daemon, validate a config, clean up after a crash, import keepalived."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from havip import config as config_mod
from havip.clihelp import EPILOG_HAVIP, Group
from havip.errors import ConfigError, HavipError
from havip.files import read_bounded

EXIT_CONFIG = 2        # check-config: the file is invalid or unreadable; import-keepalived: cannot read or write
EXIT_UNTRANSLATED = 1  # import-keepalived: some lines need a human (or the files exist)
MAX_KEEPALIVED_CONF = 8 << 20


def _load_or_exit(path: str) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        for line in exc.problems:
            click.echo(f"{path}: {line}" if not line.startswith(str(path)) else line, err=True)
        sys.exit(EXIT_CONFIG)


@click.group(cls=Group, epilog=EPILOG_HAVIP)
@click.version_option(package_name="havip")
def main() -> None:
    """havip: high availability for Milvus (VRRP, VIP, container lifecycle)."""


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
def check_config(file: str) -> None:
    """Validate FILE; print every problem as `path: value: reason`, exit 2 if any."""
    cfg = _load_or_exit(file)
    click.echo(f"{file}: ok (instance {cfg.instance}, VRID {cfg.virtual_router_id}, priority {cfg.priority}, "
               f"VRRPv{cfg.version})")
    from havip.daemon.realtime import advice

    hint = advice(cfg.advert_interval, cfg.realtime_priority)
    if hint:
        click.echo(f"{file}: warning: {hint}", err=True)
    if cfg.milvus is not None and cfg.milvus.lease_path:
        from havip.runtime.lease import mount_warning

        warning = mount_warning(cfg.milvus.lease_path)     # /proc only: never waits on the storage
        if warning:
            click.echo(f"{file}: warning: milvus.lease: {warning}", err=True)


@main.command()
@click.option("-c", "--config", "file", required=True, type=click.Path(dir_okay=False))
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto", show_default=True)
def run(file: str, log_level: str, log_format: str) -> None:
    """Run the daemon in the foreground (systemd runs it this way)."""
    from havip import logs
    from havip.control.server import ControlServer
    from havip.daemon.build import real_adapters
    from havip.daemon.loop import Daemon
    from havip.daemon.sdnotify import SdNotify
    from havip.metrics import Metrics

    cfg = _load_or_exit(file)
    log = logs.configure(log_level, log_format)
    notify = SdNotify(unset_environment=True)     # hook scripts must not inherit NOTIFY_SOCKET
    metrics = Metrics({"vrrp_instance": cfg.instance, "interface": cfg.interface,
                       "vrid": str(cfg.virtual_router_id), "version": str(cfg.version)}) if cfg.metrics.listen else None
    try:
        adapters = real_adapters(cfg, log=log, metrics=metrics)
    except HavipError as exc:
        log.error("startup_failed", error=str(exc))
        sys.exit(1)
    daemon = Daemon(cfg, adapters, log=log, metrics=metrics, notify=notify, config_path=file)
    try:
        control = ControlServer(cfg.control_socket, daemon, log=daemon.log, metrics=metrics)
        adapters.extra_close.append(control.close)
        if metrics is not None:
            metrics.serve(cfg.metrics.listen, refresh=lambda: daemon.call(daemon.status).result(timeout=2))
            adapters.extra_close.append(metrics.close)
    except HavipError as exc:
        log.error("startup_failed", error=str(exc))
        for close in adapters.extra_close:
            close()
        sys.exit(1)
    daemon.install_signals()
    sys.exit(daemon.run())


@main.command()
@click.option("-c", "--config", "file", required=True, type=click.Path(dir_okay=False))
def cleanup(file: str) -> None:
    """Remove the VIPs and stop the container: what a killed daemon left behind.

    systemd runs it as ExecStopPost=, so a crash never leaves a VIP or a Milvus running.
    """
    from havip.net.vip import VipManager

    cfg = _load_or_exit(file)
    failed = False
    # The VIP first: no write may reach a Milvus that is being stopped. Then the
    # container, with a grace of at most one advert interval: after a crash the backup
    # takes over a master-down interval (3 intervals + skew) after our last advert, and
    # this Milvus must be gone by then.
    removed: list[str] = []
    try:
        vips = VipManager(cfg.interface, list(cfg.virtual_ipaddresses))
        removed = vips.remove()
        vips.close()
        click.echo(f"VIPs removed: {', '.join(removed) if removed else 'none were attached'}")
    except HavipError as exc:
        click.echo(f"VIPs: {exc}", err=True)
        failed = True
    if cfg.milvus is not None:
        from havip.runtime.container import ContainerRuntime

        try:
            rt = ContainerRuntime(cfg.milvus.docker, cfg.milvus.container, cfg.milvus.stop_timeout)
            was = rt.stop(timeout=min(cfg.milvus.stop_timeout, cfg.advert_interval))
            click.echo(f"container {cfg.milvus.container}: {'stopped' if was else 'was not running'}")
        except HavipError as exc:
            click.echo(f"container {cfg.milvus.container}: {exc}", err=True)
            failed = True
        if not failed and cfg.milvus.lease.enabled and cfg.milvus.lease.backend == "etcd":
            # Our Milvus is confirmed stopped: revoke the etcd lease we left, so the peer
            # need not wait out its ttl.
            from havip.daemon.build import etcd_lease

            try:
                lease = etcd_lease(cfg)
                said = lease.release()
                lease.close()
                click.echo(said or f"etcd leader key {lease.key}: not held by this host")
            except HavipError as exc:
                click.echo(f"etcd lease: {exc}", err=True)
                failed = True
        elif not failed and cfg.milvus.lease_path:
            # Our Milvus is confirmed stopped: the peer need not wait out orphan_timeout.
            from havip.runtime.lease import StorageLease, holder_for   # light: cleanup is on the clock

            try:
                said = StorageLease(cfg.milvus.lease_path, holder_for(cfg)).release()
                click.echo(said or f"storage lease {cfg.milvus.lease_path}: not held by this host")
            except HavipError as exc:
                click.echo(f"storage lease: {exc}", err=True)
                failed = True
    if removed and not failed:
        # It was master: resign as a stopping master does (RFC 5798 6.4.3), so the backup
        # takes over after its skew time instead of a whole master-down interval.
        try:
            _resign(cfg)
            click.echo("resigned: priority-0 advert sent")
        except HavipError as exc:
            click.echo(f"priority-0 advert not sent: {exc}", err=True)
    sys.exit(1 if failed else 0)


def _resign(cfg: config_mod.Config) -> None:
    from havip.net.sock import AdvertSocket
    from havip.protocol import codec

    uni = cfg.unicast
    sock = AdvertSocket(cfg.interface, cfg.family, unicast_peers=[str(p) for p in uni.peers] if uni else None,
                        unicast_source=str(uni.source) if uni and uni.source else None)
    try:
        for dst in sock.destinations:
            try:
                payload = codec.encode_own(cfg, 0, src=sock.source, dst=dst)
            except ValueError as exc:
                raise HavipError(f"cannot build the advert: {exc}") from None
            sock.send_to(payload, dst)
    finally:
        sock.close()


@main.command("import-keepalived")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True)
@click.option("--partial", is_flag=True, help="Write the files even if some lines could not be translated.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option("--scripts-dir", type=click.Path(file_okay=False),
              help="Where to find the scripts the config names, by file name "
                   "(default: their own path, then the config's directory).")
def import_keepalived(file: str, out_dir: str, partial: bool, force: bool, scripts_dir: str | None) -> None:
    """Translate a keepalived.conf into havip YAML files, one per vrrp_instance.

    Every line that cannot be translated is listed; the exit status is 1 if there is
    any, and nothing is written, unless --partial is given. Exit status 2: FILE cannot
    be read (or is not UTF-8 text), or the output cannot be written.
    """
    from havip import migrate

    text = _read_keepalived(file)
    dirs = [Path(scripts_dir)] if scripts_dir else [Path(file).parent]

    def reader(path: str) -> str | None:
        found = migrate.read_script(path)
        for d in dirs:
            if found is None:
                found = migrate.read_script(str(d / Path(path).name))
        return found

    result = migrate.convert(text, source=file, script_reader=reader)
    for line in result.notes:
        click.echo(f"note: {line}", err=True)
    for line in result.untranslated:
        click.echo(f"not translated: {line}", err=True)
    if result.untranslated and not partial:
        click.echo(f"{len(result.untranslated)} line(s) not translated; nothing written (use --partial to write anyway)",
                   err=True)
        sys.exit(1)
    try:
        written = migrate.write(result, Path(out_dir), overwrite=force)
    except FileExistsError as exc:
        click.echo(f"{exc.filename or exc}: already exists; nothing written (use --force to overwrite)", err=True)
        sys.exit(EXIT_UNTRANSLATED)
    except OSError as exc:
        click.echo(f"{exc.filename or out_dir}: cannot write: {exc.strerror or exc}; nothing written", err=True)
        sys.exit(EXIT_CONFIG)
    for path in written:
        click.echo(f"wrote {path}")
    sys.exit(1 if result.untranslated else 0)


def _read_keepalived(file: str) -> str:
    """The text of a keepalived.conf, or exit 2 with one line saying why it cannot be read."""
    try:
        raw = read_bounded(file, MAX_KEEPALIVED_CONF)
    except OSError as exc:
        click.echo(f"{file}: cannot read: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_CONFIG)
    if len(raw) > MAX_KEEPALIVED_CONF:
        click.echo(f"{file}: cannot read: larger than {MAX_KEEPALIVED_CONF >> 20} MiB; not a keepalived.conf",
                   err=True)
        sys.exit(EXIT_CONFIG)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        click.echo(f"{file}: line {line}, column {column}: byte {raw[exc.start]:#04x} is not UTF-8; convert the "
                   f"file first, e.g. iconv -f latin1 -t utf-8 {file} > keepalived.utf8.conf", err=True)
        sys.exit(EXIT_CONFIG)


def _add_lab() -> None:
    from havip.lab.cli import lab

    main.add_command(lab, "lab")


_add_lab()


def _add_pool() -> None:
    from havip.pool.cli import pool

    main.add_command(pool, "pool")


_add_pool()


if __name__ == "__main__":
    main()
