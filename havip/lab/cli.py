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

import click

DEFAULT_WORKDIR = "/var/tmp/havip-lab"
workdir_option = click.option("--workdir", envvar="HAVIP_LAB_DIR", default=DEFAULT_WORKDIR, show_default=True,
                              type=click.Path(file_okay=False), help="Where the lab keeps its state, logs "
                              "and shared storage (keep it short: containerd's socket paths are limited).")


@click.group()
def lab() -> None:
    """The two-host Milvus HA lab in network namespaces (needs root)."""
    if os.geteuid() != 0:
        raise click.ClickException("the lab needs root: it creates network namespaces and runs dockerd")


def _attach(workdir: str):
    from havip.lab.milvuslab import MilvusLab

    return MilvusLab.attach(workdir)


def _start(workdir: str):
    from havip.lab.milvuslab import MilvusLab

    prefix = os.environ.get("HAVIP_LAB_PREFIX", "hvl")     # tests give their own
    lab_ = MilvusLab(workdir, prefix=prefix)
    click.echo(f"Building the lab in {workdir}: namespaces {prefix}-h1, {prefix}-h2 and {prefix}-client on a bridge, "
               f"a dockerd and a stopped Milvus container on each host, shared storage {lab_.shared}.")
    t0 = time.monotonic()
    try:
        lab_.up()
    except BaseException as exc:
        click.echo("The lab did not come up; removing what was made.", err=True)
        lab_.down()
        if isinstance(exc, (RuntimeError, TimeoutError)):
            raise click.ClickException(f"{exc} (logs: {workdir}/havip, {workdir}/h1/dockerd.log)") from None
        raise
    click.echo(f"Up in {time.monotonic() - t0:.1f}s.")
    return lab_


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
def up(workdir: str) -> None:
    """Build the lab and start havip on both hosts; it stays up until `havip lab down`."""
    existing = _attach(workdir)
    if existing is not None:
        click.echo(f"A lab is already up in {workdir}:")
        _show(existing)
        return
    lab_ = _start(workdir)
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
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
@click.option("--pool", "pool", is_flag=True, help="The read pool instead: read nodes, havip pool and nginx "
              "(docs/read-pool.md); its own workdir unless HAVIP_LAB_DIR is set.")
def demo(workdir: str, keep: bool, pool: bool) -> None:
    """Kill the master's Milvus while a client writes through the VIP, and watch."""
    if pool:
        from havip.lab.pool_demo import run_pool_demo

        run_pool_demo(os.environ.get("HAVIP_LAB_DIR"), os.environ.get("HAVIP_LAB_PREFIX"), click.echo, keep)
        return
    from havip.lab.demo import run_demo

    lab_ = _attach(workdir)
    made = lab_ is None
    if made:
        lab_ = _start(workdir)
    else:
        click.echo(f"Using the lab that is already up in {workdir} (it stays up).")
    try:
        run_demo(lab_, click.echo)
    finally:
        if made and not keep:
            click.echo("\nTearing the lab down (--keep leaves it up).")
            lab_.down()
        elif made:
            click.echo(f"\nThe lab stays up: havip lab status / down --workdir {workdir}")
