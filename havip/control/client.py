"""Client side of the control socket: one JSON line out, one JSON line back.

Every failure is a ControlError with one line an operator can act on. The subclasses
let `havipctl` choose its exit status (3 for "not running", 4 for the rest).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time

from havip.errors import ControlError
from havip.files import kind

MAX_ANSWER = 1 << 20


class NotRunning(ControlError):
    """No daemon behind the socket path."""


class PermissionDenied(ControlError):
    """The socket or the daemon refused this user."""


class Busy(ControlError):
    """The daemon did not answer in time."""


class Refused(ControlError):
    """The daemon understood the request and said no (bad request, unknown command)."""


_BY_CODE = {"permission": PermissionDenied, "busy": Busy}


def request(path: str, payload: dict, timeout: float = 5.0) -> dict:
    """Send `payload` to the daemon at `path`; return its answer (a dict with ok=True).

    Raises NotRunning, PermissionDenied, Busy, Refused or ControlError, each with one line.
    """
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        _connect(sock, path, timeout)
        try:
            try:
                sock.sendall(json.dumps(payload).encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                # The daemon may refuse before it reads (a denied user): its answer is
                # already in our receive buffer, and it says why better than EPIPE does.
                pass
            raw = _read_line(sock, deadline)
        except TimeoutError:
            raise Busy(f"daemon busy: no answer within {timeout:g}s") from None
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not raw:
        raise ControlError(f"control socket {path}: the daemon closed the connection without answering")
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):
        raise ControlError(f"control socket {path}: not a JSON answer: {raw[:80]!r}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"control socket {path}: not a JSON object: {raw[:80]!r}")
    if not answer.get("ok"):
        error = str(answer.get("error") or "request failed without a reason")
        code = answer.get("code")
        raise (_BY_CODE.get(code, Refused) if isinstance(code, str) else Refused)(error)
    return answer


def _connect(sock: socket.socket, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.connect(path)
                return
            except BlockingIOError:
                # EAGAIN: the daemon's listen backlog is full (a burst of clients); it
                # drains in milliseconds, so try again until our own deadline.
                if time.monotonic() >= deadline:
                    raise TimeoutError from None
                time.sleep(0.01)
    except FileNotFoundError:
        raise NotRunning(f"havip is not running: no control socket at {path}") from None
    except ConnectionRefusedError:
        raise NotRunning(f"havip is not running: {_what_is_there(path)}") from None
    except PermissionError:
        raise PermissionDenied(f"permission denied: cannot open {path}; run as root or as a member "
                               "of group havip") from None
    except TimeoutError:
        raise Busy(f"daemon busy: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None


def _what_is_there(path: str) -> str:
    """Why a connect to `path` was refused, from what the path is."""
    try:
        st = os.stat(path)
    except OSError:
        return f"nothing listens on {path}"
    if stat.S_ISSOCK(st.st_mode):
        return f"nothing listens on {path} (stale socket)"
    return (f"{path} is {kind(st.st_mode)}, not a socket; the daemon will not start while it is there "
            "(remove it, or check control.socket in the configuration)")


def expect(answer: dict, *fields: str, what: str = "the answer") -> None:
    """Raise ControlError "daemon answered without X" unless `answer` has every field."""
    missing = [f for f in fields if f not in answer]
    if missing:
        raise ControlError(f"daemon answered without {', '.join(missing)} in {what} "
                           "(a different havip version?)")


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_ANSWER:
            raise ControlError(f"answer longer than {MAX_ANSWER} bytes")
    return buf.split(b"\n", 1)[0]


# ------------------------------------------------------------------ switchover progress


def switchover_outcome(before: str, transitions: int, status: dict) -> tuple[bool | None, str]:
    """Where a planned switchover stands, from the state before it and a fresh status.

    Returns (True, summary) when done, (False, why) when it went wrong, (None, what) while
    it is still on its way. From master: done once this host is backup (its container
    stopped and priority 0 sent). From backup: done once this host is master and, when it
    supervises Milvus, the container is running.
    """
    state = status.get("state")
    container = status.get("container")
    now = status.get("transitions")
    moved = isinstance(now, int) and isinstance(transitions, int) and now > transitions
    if state == "fault" or state == "stopped":
        return False, f"ended in {state}: {status.get('reason')}"
    if before == "master":
        if state == "backup":
            return True, "now backup"
        return None, f"still master, container {container}"
    if state == "master":
        if container in (None, "running"):
            return True, "now master" + (", milvus running" if container else "")
        return None, f"master, container {container}"
    if moved:
        return False, f"back to {state}: {status.get('reason')}"
    return None, f"still {state}"
