"""`havip lab up | demo | status | down`: the Milvus HA lab on this machine.

Two hosts and a client in network namespaces (198.18.0.0/15, never the machine's own
network), one dockerd and one Milvus container per host on one shared directory, and
havip on both hosts. `demo` shows a client writing through the VIP while the master's
Milvus is killed. Needs root, iproute2, util-linux and docker.io (`make deps`).
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import click

from havip.clihelp import Group

DEFAULT_WORKDIR = "/var/tmp/havip-lab"
milvus_option = click.option("--milvus", "milvus", envvar="HAVIP_LAB_MILVUS", default="standalone", show_default=True,
                              type=click.Choice(["standalone", "lite"]),
                              help="standalone: the real Milvus 2.3.5 server (PyPI's milvus package, fetched once), "
                                   "the recipe's deployment; lite: milvus-lite, starts in 1 s (the fast option).")
workdir_option = click.option("--workdir", envvar="HAVIP_LAB_DIR", default=DEFAULT_WORKDIR, show_default=True,
                              type=click.Path(file_okay=False), help="Where the lab keeps its state, logs "
                              "and shared storage (keep it short: containerd's socket paths are limited).")


@click.group(cls=Group)
def lab() -> None:
    """The two-host Milvus HA lab in network namespaces (needs root)."""
    if os.geteuid() != 0:
        raise click.ClickException("the lab needs root: it creates network namespaces and runs dockerd")


def _attach(workdir: str):
    from havip.lab.milvuslab import MilvusLab

    return MilvusLab.attach(workdir)


def _start(workdir: str, milvus: str):
    from havip.lab.milvuslab import MilvusLab

    prefix = os.environ.get("HAVIP_LAB_PREFIX", "hvl")     # tests give their own
    return start_lab(MilvusLab(workdir, prefix=prefix, milvus=milvus))


def start_lab(lab_, echo=click.echo):
    """Bring `lab_` up; on any failure remove what was made and raise a ClickException
    that says what failed, in the failing command's own words, and where the logs are."""
    what = "Milvus 2.3.5 standalone" if lab_.milvus == "standalone" else "milvus-lite"
    echo(f"Building the lab in {lab_.workdir}: namespaces {lab_.prefix}-h1, {lab_.prefix}-h2 and "
         f"{lab_.prefix}-client on a bridge, a dockerd and a stopped {what} container on each host, "
         f"shared storage {lab_.shared}.")
    t0 = time.monotonic()
    try:
        lab_.up()
    except BaseException as exc:
        echo("The lab did not come up; removing what was made.", err=True)
        raise failure("The lab did not come up", lab_, exc) from None
    echo(f"Up in {time.monotonic() - t0:.1f}s.")
    return lab_


def failure(what: str, lab_, exc: BaseException) -> click.ClickException:
    """Take the lab down, then one ClickException: `what`, the cause, where the logs are.
    A KeyboardInterrupt is re-raised once the lab is down."""
    try:
        lab_.down()
        removed = "everything it made has been removed"
    except Exception as down_exc:  # noqa: BLE001 - said, never hidden
        removed = f"removing what it made failed too ({_cause(down_exc, lab_)}); run `havip lab down " \
                  f"--workdir {lab_.workdir}`"
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    return click.ClickException(f"{what}, and {removed}.\n  cause: {_cause(exc, lab_)}\n"
                                f"  logs: {lab_.log_dir} (havip and dockerd of each host), "
                                f"{lab_.workdir / 'client.log'}")


def _cause(exc: BaseException, lab_) -> str:
    """The failure in its own words; anything unexpected also goes, with its traceback,
    to the lab's log folder."""
    import docker.errors
    import requests.exceptions

    from havip.errors import HavipError
    from havip.lab.netns import CommandFailed

    if isinstance(exc, docker.errors.APIError):
        return f"Docker engine: {exc.explanation or exc}"
    if isinstance(exc, (CommandFailed, RuntimeError, TimeoutError, OSError, ValueError, HavipError,
                        docker.errors.DockerException, requests.exceptions.RequestException)):
        return " ".join(str(exc).split()) or type(exc).__name__
    try:
        lab_.log_dir.mkdir(parents=True, exist_ok=True)
        with open(lab_.log_dir / "lab-error.log", "a") as f:
            traceback.print_exception(exc, file=f)
        where = f" (traceback in {lab_.log_dir / 'lab-error.log'})"
    except OSError:
        where = ""
    return f"{type(exc).__name__}: {exc}{where}"


def _show(lab_) -> None:
    from havip.lab.milvuslab import VIP

    st = lab_.state()
    holder = ", ".join(st["vip_holders"]) or "nobody"
    click.echo(f"VIP {VIP} is on {holder}; namespaces {', '.join(st['namespaces'])}.")
    for name, h in st["hosts"].items():
        click.echo(f"  {name} ({h['address']}, priority {h['priority']}): havip {h['havip']}, "
                   f"Milvus container {h['container']}{', holds the VIP' if h['vip'] else ''}")


@lab.command()
@workdir_option
@milvus_option
def up(workdir: str, milvus: str) -> None:
    """Build the lab and start havip on both hosts; it stays up until `havip lab down`."""
    existing = _attach(workdir)
    if existing is not None:
        click.echo(f"A lab is already up in {workdir}:")
        _show(existing)
        return
    lab_ = _start(workdir, milvus)
    _show(lab_)
    client_ns = lab_.hosts["client"].ns
    click.echo(f"\nTry: ip netns exec {client_ns} {sys.executable} -c \"from pymilvus import MilvusClient; "
               f"print(MilvusClient('http://198.18.0.100:19530').list_collections())\"\n"
               f"havip logs: {lab_.workdir / 'havip'}/h1.log, h2.log. Then: havip lab status | demo | down")


@lab.command()
@workdir_option
def status(workdir: str) -> None:
    """Who is master, which Milvus runs, who holds the VIP. Exit 3 if no lab is up."""
    lab_ = _attach(workdir)
    if lab_ is None:
        click.echo(f"No lab is up in {workdir}.")
        sys.exit(3)
    _show(lab_)


@lab.command()
@workdir_option
def down(workdir: str) -> None:
    """Stop havip, remove the containers and dockerds, delete the namespaces."""
    lab_ = _attach(workdir)
    if lab_ is None:
        click.echo(f"No lab is up in {workdir}; nothing to do.")
        return
    t0 = time.monotonic()
    lab_.down()
    click.echo(f"Lab in {workdir} removed in {time.monotonic() - t0:.1f}s (logs kept in {workdir}/havip).")


@lab.command()
@workdir_option
@milvus_option
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
@click.option("--pool", "pool", is_flag=True, help="The read pool instead: read nodes, havip pool and nginx "
              "(docs/read-pool.md); its own workdir unless HAVIP_LAB_DIR is set.")
def demo(workdir: str, milvus: str, keep: bool, pool: bool) -> None:
    """Kill the master's Milvus while a client writes through the VIP, and watch."""
    if pool:
        from havip.lab.pool_demo import run_pool_demo

        run_pool_demo(os.environ.get("HAVIP_LAB_DIR"), os.environ.get("HAVIP_LAB_PREFIX"), click.echo, keep)
        return
    from havip.lab.demo import run_demo

    lab_ = _attach(workdir)
    made = lab_ is None
    if made:
        lab_ = _start(workdir, milvus)
    else:
        click.echo(f"Using the lab that is already up in {workdir} (it stays up).")
    try:
        run_demo(lab_, click.echo)
    except BaseException as exc:
        if made:
            click.echo("\nThe demo failed; tearing the lab down.", err=True)
            raise failure("The demo failed", lab_, exc) from None
        if isinstance(exc, Exception):      # the lab was up before: not ours to take down
            raise click.ClickException(f"The demo failed; the lab that was already up stays up.\n"
                                       f"  cause: {_cause(exc, lab_)}\n  logs: {lab_.log_dir}") from None
        raise
    if made and not keep:
        click.echo("\nTearing the lab down (--keep leaves it up).")
        lab_.down()
    elif made:
        click.echo(f"\nThe lab stays up: havip lab status / down --workdir {workdir}")
    click.echo(f"Logs stay in {lab_.log_dir} (havip and dockerd of each host) and {lab_.workdir / 'client.log'}.")
