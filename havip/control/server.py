"""The control socket: requests record an intent and wake the loop; the loop acts.

Protocol: the client sends one JSON object on one line and reads one JSON object on
one line back.

    {"cmd": "status"}                   -> {"ok": true, "status": {...}}
    {"cmd": "failover", "force": false} -> {"ok": true, "accepted": bool, "reason": "...", ...}
    {"cmd": "pause"} / {"cmd": "resume"}-> {"ok": true, "accepted": bool, "reason": "..."}
    anything wrong                      -> {"ok": false, "code": "...", "error": "one line"}

The server never touches the VIP or a container. A request runs a small function on the
loop thread through `daemon.call()`: it feeds the event to the state machine (which
alone decides) and reports the decision's sentence. Access: the socket file is 0660,
owner root, group `havip` where that group exists; each connection's peer credentials
(SO_PEERCRED) are checked as well, so a looser file mode cannot open it to everyone.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import reprlib
import socket
import stat
import struct
import threading
import time
from concurrent.futures import CancelledError, TimeoutError as FutureTimeout
from pathlib import Path

from havip.control import serve
from havip.control.client import switchover_outcome
from havip.errors import ControlError
from havip.model import FailoverRequested, PauseChanged

MAX_REQUEST = 64 * 1024
READ_TIMEOUT = serve.REQUEST_TIMEOUT    # for the whole request line, from the accept
SWITCHOVER_WATCH = 600.0    # how long the server follows a switchover for its metric
_SHORT = reprlib.Repr()        # a bounded repr of what a client sent (Python 3.11 has no kwargs here)
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 2, 40, 40, 4, 4


class _Reply(Exception):
    """An error answer: `code` for programs, the message for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ credentials


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def peer_groups(pid: int, uid: int, gid: int) -> set[int]:
    """The peer's supplementary groups: from /proc (what the process holds), else /etc/group."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]} | {gid}
    except (OSError, ValueError):
        pass
    try:
        return set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except (KeyError, OSError):
        return {gid}


def is_allowed(uid: int, groups: set[int], admin_gid: int | None, own_uid: int | None = None) -> bool:
    """Root, the daemon's own user, and members of the admin group may use the socket."""
    own_uid = os.geteuid() if own_uid is None else own_uid
    return uid == 0 or uid == own_uid or (admin_gid is not None and admin_gid in groups)


def _group_id(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


# ------------------------------------------------------------------ the server


class ControlServer:
    """Serves the control protocol on a Unix socket in its own thread.

    `daemon` needs `call(fn) -> Future` (runs fn on the loop thread), `status()` and
    `feed(event) -> Decision` (loop thread only) and `machine`. `metrics` (optional)
    gets the duration of each switchover accepted here (`failover_done`).
    """

    def __init__(self, path: str, daemon, *, log, metrics=None, group: str | None = "havip",
                 loop_timeout: float = 2.0, mode: int = 0o660, request_timeout: float = READ_TIMEOUT,
                 max_connections: int | None = None, workers: int = serve.WORKERS,
                 evict_after: float = serve.EVICT_AFTER):
        self.path = str(path)
        self.daemon = daemon
        self.log = log
        self.metrics = metrics
        self.loop_timeout = loop_timeout
        self.request_timeout = request_timeout
        self.gid = _group_id(group)
        self.group = group if self.gid is not None else None
        self._watching = threading.Lock()
        self._status_lock = threading.Lock()
        self._denied, self._denied_logged = 0, -1e9
        self._status_future = None
        self._inode: tuple[int, int] | None = None
        timeout_reply = _line(_error("bad_request", f"bad request: no complete request line within "
                                                    f"{request_timeout:g}s"))
        self._listener = serve.Listener(self._bind(mode), self.answer_line, log=log, refuse=self._refusal,
                                        timeout_reply=timeout_reply, max_request=MAX_REQUEST,
                                        request_timeout=request_timeout, max_connections=max_connections,
                                        workers=workers, evict_after=evict_after)
        self.log.info("control_listening", socket=self.path, group=self.group or "root only",
                      max_connections=self._listener.max_connections)

    @property
    def counters(self) -> dict[str, int]:
        """Connections refused or dropped, by reason (at_capacity, request_timeout, ...)."""
        return dict(self._listener.counters)

    def _bind(self, mode: int) -> socket.socket:
        """Bind under a temporary name, set mode and group, then rename into place, so
        the socket is never reachable with the wrong permissions."""
        parent = os.path.dirname(self.path) or "."
        try:
            if not os.path.isdir(parent):
                os.makedirs(parent)
                os.chmod(parent, 0o755)     # not the umask's choice: group havip must get through
        except OSError as exc:
            raise ControlError(f"control socket {self.path}: cannot create {parent}: {exc.strerror}") from None
        st = os.stat(parent)
        if st.st_mode & stat.S_IWOTH or st.st_uid not in (0, os.geteuid()):
            # Another user could bind the path first (the daemon would not start) or, without
            # the sticky bit, put a symlink where the chmod/rename below expects our socket.
            raise ControlError(f"control socket {self.path}: {parent} can be written by other users, who could "
                               "take the socket's place; use a directory only root can write, such as /run/havip")
        self._clear_stale()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            server.bind(tmp)
            server.listen(serve.BACKLOG)     # before the rename: never reachable yet refusing
        except OSError as exc:
            server.close()
            raise ControlError(f"control socket {self.path}: cannot listen: {exc.strerror or exc}") from None
        try:
            os.chmod(tmp, mode)
            if self.gid is not None:
                os.chown(tmp, 0 if os.geteuid() == 0 else -1, self.gid)
            os.rename(tmp, self.path)
            st = os.stat(self.path)
        except OSError as exc:
            server.close()
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise ControlError(f"control socket {self.path}: cannot set permissions: {exc.strerror}") from None
        self._inode = (st.st_dev, st.st_ino)
        return server

    def _clear_stale(self) -> None:
        """Remove a socket left by a dead daemon; refuse if a live one answers there."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"control socket {self.path}: exists and is not a socket; remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            os.unlink(self.path)         # nobody listens: a dead daemon's socket
            return
        except OSError as exc:           # e.g. a live but stuck daemon: do not take its socket
            raise ControlError(f"control socket {self.path}: in use and not answering ({exc.strerror or exc}); "
                               "is another havip running?") from None
        finally:
            probe.close()
        raise ControlError(f"control socket {self.path}: another havip is already serving it")

    def close(self) -> None:
        """Stop serving and remove the socket file (if it is still ours)."""
        self._listener.close()
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ requests

    def handle(self, request: object) -> dict:
        """Answer one decoded request (already permitted); never raises."""
        try:
            if not isinstance(request, dict):
                raise _Reply("bad_request", 'bad request: expected a JSON object such as {"cmd": "status"}')
            cmd = request.get("cmd")
            if cmd == "status":
                return {"ok": True, "status": self._status()}
            if cmd == "failover":
                force = request.get("force", False)
                if not isinstance(force, bool):
                    raise _Reply("bad_request", f"bad request: force: {_brief(force)}: must be true or false")
                return self._failover(force)
            if cmd in ("pause", "resume"):
                return self._intent(PauseChanged(paused=cmd == "pause"))
            raise _Reply("unknown_command", f"unknown command {_brief(cmd)}: expected status, failover, "
                                            "pause or resume")
        except _Reply as exc:
            return _error(exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug answers the client and is logged, never kills the server
            self.log.exception("control_failed", error=repr(exc))
            return _error("internal", f"internal error: {_brief(exc)}")

    def answer_line(self, line: bytes) -> bytes:
        """One request line -> one answer line (on a worker thread); never raises."""
        try:
            request = parse_request(line)
        except _Reply as exc:
            return _line(_error(exc.code, str(exc)))
        return _line(self.handle(request))

    def _refusal(self, sock: socket.socket) -> bytes | None:
        """At accept: the answer for a peer that may not use the socket, else None."""
        try:
            pid, uid, gid = peer_credentials(sock)
        except OSError:
            return _line(_error("permission", "permission denied: cannot read the peer's credentials"))
        if is_allowed(uid, peer_groups(pid, uid, gid), self.gid):
            return None
        self._denied += 1
        now = time.monotonic()
        if now - self._denied_logged >= 10.0:      # one line per 10 s, however many connections
            self._denied_logged = now
            self.log.warning("control_denied", pid=pid, uid=uid, denied_so_far=self._denied)
        who = f"root or members of group {self.group}" if self.group else "root"
        return _line(_error("permission", f"permission denied: uid {uid} may not use the control socket "
                                          f"(only {who})"))

    def _on_loop(self, fn):
        """Run fn on the loop thread; a loop that does not answer in time is 'busy'."""
        return self._wait(self.daemon.call(fn))

    def _wait(self, fut):
        try:
            return fut.result(timeout=self.loop_timeout)
        except FutureTimeout:
            if fut.cancel():     # not started: the intent will not be acted on later
                raise _Reply("busy", f"daemon busy: the loop did not answer within {self.loop_timeout:g}s; "
                                     "nothing was changed") from None
            # Already running on the loop: it will finish; wait for its answer a little longer.
            try:
                return fut.result(timeout=self.loop_timeout)
            except FutureTimeout:
                raise _Reply("busy", f"daemon busy: the request is being handled but did not finish "
                                     f"within {2 * self.loop_timeout:g}s") from None

    def _status(self) -> dict:
        """A status snapshot from the loop. Concurrent requests share the one being made
        (a burst of 1,000 `status` costs the loop a few snapshots, not 1,000)."""
        with self._status_lock:
            fut = self._status_future
            if fut is None or fut.done():
                fut = self._status_future = self.daemon.call(self.daemon.status)
        try:
            return self._wait(fut)
        except CancelledError:          # another request sharing it gave up: the loop is stuck
            raise _Reply("busy", f"daemon busy: the loop did not answer within {self.loop_timeout:g}s; "
                                 "nothing was changed") from None

    def _intent(self, event, precheck=None) -> dict:
        """Feed `event` on the loop thread; say whether it changed anything, and why."""
        def on_loop():
            d = self.daemon
            before = d.machine
            facts = {"from": str(before.state), "transitions": before.transitions}
            refusal = precheck(d.status()) if precheck is not None else None
            if refusal:
                return {"accepted": False, "reason": refusal, **facts, "state": str(before.state)}
            decision = d.feed(event)
            accepted = d.machine != before
            reason = getattr(decision, "reason", None) or (
                d.machine.reason if accepted else f"nothing to do: {_describe(event)} changes nothing now")
            return {"accepted": accepted, "reason": reason, **facts, "state": str(d.machine.state)}

        answer = self._on_loop(on_loop)
        self.log.info("control_request", request=_describe(event), accepted=answer["accepted"],
                      reason=answer["reason"])
        return {"ok": True, **answer}

    def _failover(self, force: bool) -> dict:
        answer = self._intent(FailoverRequested(force=force),
                              precheck=None if force else _no_peer_refusal)
        if answer["accepted"]:
            self._watch_switchover(answer["from"], answer["transitions"])
        return answer

    def _watch_switchover(self, before: str, transitions: int) -> None:
        """Follow an accepted switchover until it ends: one log line and the metric."""
        if not self._watching.acquire(blocking=False):
            return                                       # one watcher is enough
        t0 = time.monotonic()

        def watch():
            try:
                outcome, what = None, ""
                while time.monotonic() - t0 < SWITCHOVER_WATCH:
                    try:
                        outcome, what = switchover_outcome(before, transitions, self._on_loop(self.daemon.status))
                    except _Reply:
                        pass                             # busy loop: ask again
                    if outcome is not None:
                        break
                    time.sleep(0.1)
                took = time.monotonic() - t0
                if outcome:
                    self.log.info("switchover_done", seconds=round(took, 3), outcome=what)
                    if self.metrics is not None:
                        self.metrics.failover_done(took)
                else:
                    self.log.warning("switchover_failed", seconds=round(took, 3), outcome=what or "timed out")
            finally:
                self._watching.release()

        threading.Thread(target=watch, name="havip-switchover", daemon=True).start()


def _no_peer_refusal(status: dict) -> str | None:
    """On a master, refuse a handover when no healthy backup is there to take it.

    VRRP backups are silent; havip backups say their state and health in the peer beacon
    (havip/net/beacon.py), and `standby_peers` lists those that could serve right now.
    """
    if status.get("state") == "master" and not status.get("standby_peers"):
        return ("refused switchover: no healthy havip backup heard in the last few seconds, so nobody "
                "would take over (a keepalived backup sends no beacon: use --force if one is there)")
    return None


def _error(code: str, message: str) -> dict:
    """An error answer: `code` for programs, `error` (one line) for people."""
    return {"ok": False, "code": code, "error": " ".join(message.split())}


def _describe(event) -> str:
    if isinstance(event, FailoverRequested):
        return "failover" + (" --force" if event.force else "")
    if isinstance(event, PauseChanged):
        return "pause" if event.paused else "resume"
    return type(event).__name__


def parse_request(line: bytes) -> object:
    """The bytes of one request line -> the decoded JSON value; raise _Reply if it is not one.

    Strict UTF-8 (no byte-order mark, no NUL), JSON within the interpreter's limits: every
    failure is one clear line for the client, never an exception for the server.
    """
    if len(line) > MAX_REQUEST:
        raise _Reply("bad_request", f"bad request: longer than {MAX_REQUEST} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reply("bad_request", f"bad request: not UTF-8 (byte {line[exc.start]:#04x} at offset "
                                    f"{exc.start})") from None
    if text.startswith("\ufeff"):
        raise _Reply("bad_request", "bad request: starts with a byte-order mark; send UTF-8 JSON without one")
    if "\0" in text:
        raise _Reply("bad_request", f"bad request: NUL byte at offset {text.index(chr(0))}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Reply("bad_request", f"bad request: not JSON ({exc.msg}): {_brief(line)}") from None
    except RecursionError:
        raise _Reply("bad_request", "bad request: JSON nested too deeply") from None
    except ValueError as exc:       # e.g. an integer longer than sys.get_int_max_str_digits()
        raise _Reply("bad_request", f"bad request: unacceptable JSON value ({str(exc)[:80]})") from None


def _brief(value: object) -> str:
    """At most 80 characters of repr(value), at most two levels deep."""
    text = _SHORT.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _line(answer: dict) -> bytes:
    return json.dumps(answer, default=str).encode() + b"\n"
