"""`havipctl`: what every havip instance on this host is doing and why; switchover; pause.

Talks to the daemons over their control sockets (havip.control). Without `-s`, every
`*.yaml` in /etc/havip (or $HAVIP_CONF_DIR) names an instance and its socket; with no
config there, every socket in /run/havip (or $HAVIP_RUN_DIR) is used.

Exit status (LSB, as `supervisorctl status`): 0 master or backup and healthy, 1 fault
(or a refused or failed request), 3 daemon not running (also: a file, directory or FIFO
where the socket should be), 4 unknown or other error (busy, permission denied, an
answer without the expected fields). With several instances, the highest of their codes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import click

from havip.clihelp import EPILOG_HAVIPCTL, Group
from havip.control import client
from havip.errors import ConfigError, ControlError

EXIT_OK, EXIT_FAULT, EXIT_NOT_RUNNING, EXIT_UNKNOWN = 0, 1, 3, 4
REQUEST_TIMEOUT = 5.0
POLL = 0.1


@dataclass(frozen=True)
class Target:
    name: str
    socket: str
    note: str | None = None         # why the socket path is a guess (the config could not be read)


# ------------------------------------------------------------------ finding the daemons


def _conf_dir() -> Path:
    return Path(os.environ.get("HAVIP_CONF_DIR") or "/etc/havip")


def _run_dir() -> Path:
    return Path(os.environ.get("HAVIP_RUN_DIR") or "/run/havip")


def _socket_of(path: Path) -> Target:
    """The instance and control socket a config file names (leniently if it is invalid:
    the daemon may still run an older, valid version of it)."""
    from havip import config as config_mod

    try:
        cfg = config_mod.load(path)
        return Target(cfg.instance, cfg.control_socket)
    except ConfigError:
        pass
    note = None
    try:
        data, _ = config_mod.read_yaml(path)     # unreadable, NUL bytes, too deep: ConfigError
    except ConfigError as exc:
        data, note = None, exc.problems[0]
    data = data if isinstance(data, dict) else {}
    name, control = data.get("instance"), data.get("control")
    name = name if isinstance(name, str) and name and "/" not in name else path.stem
    sock = control.get("socket") if isinstance(control, dict) else None
    sock = sock if isinstance(sock, str) and sock else f"/run/havip/{name}.sock"
    return Target(name, sock, f"{note} (assuming the socket {sock})" if note else None)


def discover() -> list[Target]:
    """Every instance on this host: from the config files, else from the sockets present."""
    configs = sorted(_conf_dir().glob("*.yaml"))
    if configs:
        return [_socket_of(p) for p in configs]
    return [Target(p.stem, str(p)) for p in sorted(_run_dir().glob("*.sock"))]


def targets(socket_opt: str | None) -> list[Target]:
    """`-s` given: that socket (a path, or an instance name); else every instance found."""
    if socket_opt:
        if "/" in socket_opt:
            return [Target(Path(socket_opt).stem, socket_opt)]
        found = [t for t in discover() if t.name == socket_opt]
        return found or [Target(socket_opt, str(_run_dir() / f"{socket_opt}.sock"))]
    found = discover()
    if not found:
        raise client.NotRunning(f"havip is not running: no config in {_conf_dir()} and no control socket "
                                f"in {_run_dir()}")
    return found


def _one_target(socket_opt: str | None) -> Target:
    found = targets(socket_opt)
    if len(found) > 1:
        names = ", ".join(t.name for t in found)
        raise ControlError(f"several instances on this host ({names}); choose one with -s INSTANCE")
    return found[0]


# ------------------------------------------------------------------ exit codes and errors


def exit_code(status: dict) -> int:
    """LSB status of one instance from its status dict."""
    state = status.get("state")
    if state in ("master", "backup"):
        return EXIT_FAULT if status.get("healthy") is False else EXIT_OK
    if state == "fault":
        return EXIT_FAULT
    if state == "stopped":
        return EXIT_NOT_RUNNING
    return EXIT_UNKNOWN


def _error_code(exc: ControlError) -> int:
    return EXIT_NOT_RUNNING if isinstance(exc, client.NotRunning) else EXIT_UNKNOWN


def _fail(message: str, target: Target | None = None, prefix: bool = False) -> None:
    if target is not None and target.note:
        click.echo(f"note: {target.note}", err=True)
    click.echo(f"{target.name}: {message}" if prefix and target else message, err=True)


# ------------------------------------------------------------------ rendering


def _text(value: object) -> str:
    """A value from the daemon as one line of text: control characters escaped.

    Peers' names reach the status through beacons; a newline in one must not forge a
    line of this table.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dur(seconds: object) -> str:
    seconds = _number(seconds)
    if seconds is None or seconds != seconds or abs(seconds) > 1e12:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


def _latency(seconds: object) -> str:
    seconds = _number(seconds)
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _columns(rows: list[list[str]], indent: str = "") -> list[str]:
    rows = [[_text(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _master_line(st: dict) -> str:
    if st.get("state") == "master":
        return "this host"
    m = _dict(st.get("master"))
    if not m:
        return "none heard"
    interval = _number(m.get("interval"))
    return (f"{m.get('address')} priority {m.get('priority')}, advert every "
            f"{'?' if interval is None else format(interval, 'g')}s, "
            f"last seen {_dur(m.get('last_seen_seconds_ago'))} ago")


def _lease_line(lease: object) -> str:
    lease = _dict(lease)
    if not lease:
        return "none"
    if lease.get("error"):
        return f"{lease.get('path')}: cannot read: {lease['error']}"
    if lease.get("backend") == "etcd":
        return _etcd_lease_line(lease)
    if lease.get("known") is False:
        return f"not touched by this host yet ({lease.get('path')})"
    if lease.get("held_here"):
        return f"held by this host ({lease.get('holder')}, epoch {lease.get('epoch')})"
    if not lease.get("holder"):
        return f"free ({lease.get('path')})"
    return f"{lease.get('state')} by {lease.get('holder')} (epoch {lease.get('epoch')}; {lease.get('path')})"


def _sched_line(sched: object) -> str:
    sched = _dict(sched)
    if not sched:
        return "unknown"
    if sched.get("requested") and sched.get("policy") != "SCHED_RR":
        return f"REFUSED: asked for SCHED_RR {sched.get('requested')}: {sched.get('detail')}"
    return f"{sched.get('policy')} {sched.get('priority')} ({sched.get('detail')})"


def _peer_row(peer: dict) -> list[str]:
    health = {True: "healthy", False: "cannot serve"}.get(peer.get("healthy"), "health unknown")
    paused = ", PAUSED" if peer.get("paused") is True else ""
    seen = _number(peer.get("last_seen_seconds_ago"))
    return [f"peer {peer.get('address')}", f"{peer.get('instance')}: {peer.get('state')}, priority "
            f"{peer.get('priority')}, {health}{paused} (seen {'?' if seen is None else f'{seen:.1f}'}s ago)"]


def render(st: dict) -> str:
    """The status of one instance as a short table for people (whatever the daemon sent)."""
    prio = _dict(st.get("priority"))
    vips = ", ".join(_text(v) for v in _list(st.get("vips"))) or "none"
    drops = _dict(st.get("drops"))
    paused = st.get("paused") is True
    rows = [
        ["instance", str(st.get("instance"))],
        ["state", f"{st.get('state')} for {_dur(st.get('since_seconds'))}" + (" (paused)" if paused else "")],
        ["reason", str(st.get("reason"))],
        ["priority", f"{prio.get('configured')} configured, {prio.get('effective')} effective"],
        ["VIPs", f"{vips} ({'attached' if st.get('vip_attached') else 'not attached'})"],
        ["master", _master_line(st)],
    ]
    peers = [p for p in _list(st.get("peers")) if isinstance(p, dict)]
    rows += [_peer_row(p) for p in peers]
    if "peers_seen" in st and not peers:
        rows.append(["peers heard", ", ".join(_text(p) for p in _list(st["peers_seen"])) or "none in the last 60s"])
    checks = [c for c in _list(st.get("checks")) if isinstance(c, dict)]
    rows.append(["checks", "none" if not checks else f"{sum(bool(c.get('ok')) for c in checks)}/{len(checks)} ok"])
    lines = _columns(rows)
    if checks:
        table = [["NAME", "OK", "LATENCY", "REASON"]] + [
            [str(c.get("name")), "yes" if c.get("ok") else "NO", _latency(c.get("latency")), str(c.get("reason"))]
            for c in checks]
        lines += _columns(table, indent="  ")
    tail = [
        ["container", st.get("container") or "not supervised"],
        ["storage lease", _lease_line(st.get("lease"))],
        *([["held back", "yes: will not preempt (after a handover, or Milvus failed here); "
                         "`havipctl failover` on this host takes over"]] if st.get("hold") else []),
        ["scheduling", _sched_line(st.get("scheduling"))],
        ["transitions", str(st.get("transitions"))],
        ["drops", ", ".join(f"{k} {v}" for k, v in sorted(drops.items(), key=str)) or "none"],
        ["paused", "yes: no automatic transitions, no container actions" if paused else "no"],
    ]
    width = max(len(r[0]) for r in rows + tail)
    lines += [f"{k.ljust(width)}  {_text(v)}" for k, v in tail]
    return "\n".join(lines)


# ------------------------------------------------------------------ commands


@click.group(cls=Group, epilog=EPILOG_HAVIPCTL, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-s", "--socket", "socket_opt", metavar="SOCKET",
              help="Control socket path, or an instance name (default: every instance on this host).")
@click.version_option(package_name="havip")
@click.pass_context
def main(ctx: click.Context, socket_opt: str | None) -> None:
    """Show and steer the havip daemons on this host."""
    ctx.obj = socket_opt


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per instance (stable keys).")
@click.pass_obj
def status(socket_opt: str | None, as_json: bool) -> None:
    """State, reason, priority, VIPs, master, checks, container, drops of each instance."""
    try:
        found = targets(socket_opt)
    except ControlError as exc:
        _fail(str(exc))
        raise SystemExit(_error_code(exc)) from None
    code, shown = EXIT_OK, 0
    for t in found:
        try:
            st = _status(t)
        except ControlError as exc:
            _fail(str(exc), t, prefix=len(found) > 1)
            code = max(code, _error_code(exc))
            continue
        if as_json:
            click.echo(json.dumps(st, sort_keys=True))
        else:
            click.echo(("\n" if shown else "") + render(st))
        shown += 1
        code = max(code, exit_code(st))
    raise SystemExit(code)


@main.command()
@click.option("--force", is_flag=True, help="Go ahead even if no peer was heard or this host is unhealthy.")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait until the move is done.")
@click.pass_obj
def failover(socket_opt: str | None, force: bool, timeout: float) -> None:
    """Planned switchover: a master hands over (and stays backup); a backup takes over."""
    try:
        t = _one_target(socket_opt)
        t0 = time.monotonic()
        answer = client.request(t.socket, {"cmd": "failover", "force": force}, REQUEST_TIMEOUT)
        client.expect(answer, "accepted", "reason")
        if answer["accepted"]:
            client.expect(answer, "from", "transitions")
            _expect_switchover_start(answer)
    except ControlError as exc:
        _fail(str(exc))
        raise SystemExit(_error_code(exc)) from None
    if not answer.get("accepted"):
        _fail(str(answer.get("reason")))
        raise SystemExit(EXIT_FAULT)
    click.echo(f"switchover requested: {answer.get('reason')}")
    raise SystemExit(_wait_switchover(t, answer, t0, timeout))


def _expect_switchover_start(answer: dict) -> None:
    """Raise ControlError unless an accepted failover says where it started (a state and a count)."""
    if not isinstance(answer["from"], str):
        raise ControlError(f"daemon answered with from {_text(answer['from'])[:40]}, not a state "
                           "(a different havip version?)")
    if not isinstance(answer["transitions"], int) or isinstance(answer["transitions"], bool):
        raise ControlError(f"daemon answered with transitions {_text(answer['transitions'])[:40]}, not a number "
                           "(a different havip version?)")


def _status(t: Target) -> dict:
    """The status dict of one instance; ControlError if the answer is not one."""
    answer = client.request(t.socket, {"cmd": "status"}, REQUEST_TIMEOUT)
    client.expect(answer, "status")
    st = answer["status"]
    if not isinstance(st, dict):
        raise ControlError("daemon answered without a status object (a different havip version?)")
    client.expect(st, "state", what="the status")
    return st


def _wait_switchover(t: Target, answer: dict, t0: float, timeout: float) -> int:
    """Poll the status until the move is done, failed or out of time."""
    where = "waiting for the first status"
    while time.monotonic() - t0 < timeout:
        try:
            st = _status(t)
        except client.Busy:
            time.sleep(POLL)
            continue
        except ControlError as exc:
            _fail(f"switchover: {exc}")
            return _error_code(exc)
        done, where = client.switchover_outcome(answer["from"], answer["transitions"], st)
        took = time.monotonic() - t0
        if done:
            click.echo(f"switchover done in {took:.2f}s: {where}")
            return EXIT_OK
        if done is False:
            _fail(f"switchover failed after {took:.2f}s: {where}")
            return EXIT_FAULT
        time.sleep(POLL)
    _fail(f"switchover not done within {timeout:g}s: {where}")
    return EXIT_FAULT


def _intent(socket_opt: str | None, cmd: str) -> None:
    try:
        found = targets(socket_opt)
    except ControlError as exc:
        _fail(str(exc))
        raise SystemExit(_error_code(exc)) from None
    code = EXIT_OK
    for t in found:
        prefix = f"{t.name}: " if len(found) > 1 else ""
        try:
            answer = client.request(t.socket, {"cmd": cmd}, REQUEST_TIMEOUT)
            client.expect(answer, "reason")
        except ControlError as exc:
            _fail(str(exc), t, prefix=len(found) > 1)
            code = max(code, _error_code(exc))
            continue
        click.echo(prefix + str(answer.get("reason")))
    raise SystemExit(code)


@main.command()
@click.pass_obj
def pause(socket_opt: str | None) -> None:
    """Maintenance mode: no automatic transitions and no container actions."""
    _intent(socket_opt, "pause")


@main.command()
@click.pass_obj
def resume(socket_opt: str | None) -> None:
    """Leave maintenance mode."""
    _intent(socket_opt, "resume")


def _etcd_lease_line(lease: dict) -> str:
    key = lease.get("key")
    if lease.get("held_here"):
        lost = f"; LOST: {lease.get('last_error')}" if lease.get("state") == "lost" else ""
        return (f"etcd {key}: held by this host ({lease.get('holder')}, lease {lease.get('lease_id')}, "
                f"ttl left {lease.get('ttl_left')}s via {lease.get('endpoint')}){lost}")
    if lease.get("known") is False:
        return f"etcd {key}: not touched by this host yet"
    err = f"; last error: {lease['last_error']}" if lease.get("last_error") else ""
    if not lease.get("holder"):
        return f"etcd {key}: free{err}"
    return f"etcd {key}: held by {lease.get('holder')} (lease {lease.get('lease_id')}){err}"


def _add_pool() -> None:
    # The read pool has its own status file and code path (havip.pool.cli).
    from havip.pool.cli import ctl_pool

    main.add_command(ctl_pool, "pool")


_add_pool()


if __name__ == "__main__":
    main()
