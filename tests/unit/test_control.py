"""The control socket against a fake daemon, over a real Unix socket."""

from __future__ import annotations

import grp
import json
import os
import shutil
import socket
import stat
import tempfile
import time

import pytest

from havip.control import client
from havip.control.server import ControlServer, is_allowed, peer_credentials
from havip.errors import ControlError
from havip.model import FailoverRequested, PauseChanged
from tests.conftest import require
from tests.unit.fake_daemon import RecLog


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "run" / "havip" / "master.sock")


@pytest.fixture
def server(daemon, sock_path):
    srv = ControlServer(sock_path, daemon, log=RecLog(), loop_timeout=0.3)
    yield srv
    srv.close()


def raw(path: str, data: bytes, timeout: float = 3.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        return json.loads(s.makefile("rb").readline())


# ------------------------------------------------------------------ socket file


def test_socket_file_mode_and_parent_dir(server, sock_path):
    st = os.stat(sock_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(os.path.dirname(sock_path)).st_mode) == 0o755
    assert not [p for p in os.listdir(os.path.dirname(sock_path)) if p.endswith(".tmp")]


def test_parent_dir_is_0755_whatever_the_umask(daemon, sock_path):
    old = os.umask(0o077)
    try:
        srv = ControlServer(sock_path, daemon, log=RecLog())
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(os.path.dirname(sock_path)).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
    finally:
        srv.close()


def test_close_removes_the_socket(daemon, sock_path):
    srv = ControlServer(sock_path, daemon, log=RecLog())
    assert os.path.exists(sock_path)
    srv.close()
    assert not os.path.exists(sock_path)
    with pytest.raises(client.NotRunning, match=f"havip is not running: no control socket at {sock_path}"):
        client.request(sock_path, {"cmd": "status"}, 1)


def test_stale_socket_is_replaced_and_live_one_refused(daemon, sock_path):
    os.makedirs(os.path.dirname(sock_path))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)          # a dead daemon's socket: the file exists, nobody listens
    stale.close()
    with pytest.raises(client.NotRunning, match="stale socket"):
        client.request(sock_path, {"cmd": "status"}, 1)
    srv = ControlServer(sock_path, daemon, log=RecLog())
    try:
        assert client.request(sock_path, {"cmd": "status"}, 2)["ok"]
        with pytest.raises(ControlError, match="another havip is already serving it"):
            ControlServer(sock_path, daemon, log=RecLog())
    finally:
        srv.close()


def test_a_regular_file_in_the_way_is_not_removed(daemon, sock_path):
    os.makedirs(os.path.dirname(sock_path))
    open(sock_path, "w").close()
    with pytest.raises(ControlError, match="exists and is not a socket"):
        ControlServer(sock_path, daemon, log=RecLog())
    assert os.path.isfile(sock_path)


# ------------------------------------------------------------------ requests


def test_status_is_the_loops_snapshot(server, sock_path):
    answer = client.request(sock_path, {"cmd": "status"}, 2)
    st = answer["status"]
    assert st["state"] == "backup"
    assert st["reason"].startswith("started; waiting")
    assert st["priority"] == {"configured": 100, "effective": 100}
    assert st["drops"] == {"bad_ttl": 2}


def test_pause_and_resume_feed_the_machine_and_say_why(server, daemon, sock_path):
    answer = client.request(sock_path, {"cmd": "pause"}, 2)
    assert answer["accepted"] is True
    assert answer["reason"] == "paused: no automatic transitions and no container actions"
    assert daemon.fed[-1] == PauseChanged(paused=True)
    assert daemon.run(lambda: daemon.machine.paused)

    again = client.request(sock_path, {"cmd": "pause"}, 2)
    assert again["accepted"] is False
    assert again["reason"] == "nothing to do: pause changes nothing now"

    resumed = client.request(sock_path, {"cmd": "resume"}, 2)
    assert resumed["reason"] == "resumed: automatic transitions are on again"
    assert not daemon.run(lambda: daemon.machine.paused)
    assert ("info", "control_request", {"request": "resume", "accepted": True,
                                        "reason": "resumed: automatic transitions are on again"}) \
        in server.log.lines


def test_failover_on_a_backup_takes_over(server, daemon, sock_path):
    answer = client.request(sock_path, {"cmd": "failover", "force": False}, 2)
    assert answer["accepted"] is True
    assert answer["from"] == "backup" and answer["state"] == "master"
    assert answer["reason"].startswith("planned takeover requested by the operator")
    assert daemon.fed[-1] == FailoverRequested(force=False)


def test_failover_on_an_unhealthy_backup_is_refused_by_the_machine(server, daemon, sock_path):
    daemon.set_health(False)            # the machine moves to FAULT
    answer = client.request(sock_path, {"cmd": "failover"}, 2)
    assert answer == {"ok": True, "accepted": False, "reason": "refused failover: nothing to do in state fault",
                      "from": "fault", "transitions": answer["transitions"], "state": "fault"}


def test_failover_on_a_master_without_peers_is_refused_before_the_machine(server, daemon, sock_path):
    daemon.become_master()
    daemon.peers_seen = []
    fed = len(daemon.fed)
    answer = client.request(sock_path, {"cmd": "failover"}, 2)
    assert answer["accepted"] is False
    assert answer["reason"].startswith("refused switchover: no healthy havip backup heard")
    assert len(daemon.fed) == fed                   # the machine never saw it

    forced = client.request(sock_path, {"cmd": "failover", "force": True}, 2)
    assert forced["accepted"] is True
    assert forced["reason"] == "planned switchover requested by the operator"
    assert forced["state"] == "backup"


def test_failover_on_a_master_with_a_peer_hands_over_and_is_timed(daemon, sock_path):
    from havip.metrics import Metrics

    metrics = Metrics()
    log = RecLog()
    srv = ControlServer(sock_path, daemon, log=log, metrics=metrics)
    try:
        daemon.become_master()
        answer = client.request(sock_path, {"cmd": "failover"}, 2)
        assert answer["accepted"] and answer["from"] == "master"
        deadline = time.monotonic() + 3
        while "switchover_done" not in log.events() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "switchover_done" in log.events()
        assert metrics.registry.get_sample_value("havip_last_failover_seconds") > 0
    finally:
        srv.close()


@pytest.mark.parametrize("line, code, message", [
    (b"{not json\n", "bad_request", "bad request: not JSON"),
    (b"[1, 2]\n", "bad_request", "bad request: expected a JSON object"),
    (b'{"cmd": "reboot"}\n', "unknown_command", "unknown command 'reboot': expected status, failover"),
    (b'{"nocmd": 1}\n', "unknown_command", "unknown command None"),
    (b'{"cmd": "failover", "force": "yes"}\n', "bad_request", "bad request: force: 'yes': must be true or false"),
])
def test_bad_requests_get_a_clear_error_and_the_server_lives_on(server, sock_path, line, code, message):
    answer = raw(sock_path, line)
    assert answer["ok"] is False and answer["code"] == code
    assert answer["error"].startswith(message)
    assert "\n" not in answer["error"]
    assert client.request(sock_path, {"cmd": "status"}, 2)["ok"]


def test_client_raises_one_line_for_an_error_answer(server, sock_path):
    with pytest.raises(client.Refused, match="^unknown command 'nope'"):
        client.request(sock_path, {"cmd": "nope"}, 2)


def test_busy_loop_answers_busy_and_the_intent_is_dropped(server, daemon, sock_path):
    daemon.hang.set()
    try:
        t0 = time.monotonic()
        with pytest.raises(client.Busy, match="^daemon busy: the loop did not answer within 0.3s; "
                                              "nothing was changed$"):
            client.request(sock_path, {"cmd": "failover"}, 2)
        assert time.monotonic() - t0 < 1.5
    finally:
        daemon.hang.clear()
    assert client.request(sock_path, {"cmd": "status"}, 2)["status"]["state"] == "backup"
    assert not any(isinstance(e, FailoverRequested) for e in daemon.fed)


def test_client_timeout_is_daemon_busy(tmp_path):
    path = str(tmp_path / "mute.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(path)
    mute.listen(1)                  # accepts, never answers
    try:
        with pytest.raises(client.Busy, match=r"^daemon busy: no answer within 0.3s$"):
            client.request(path, {"cmd": "status"}, 0.3)
    finally:
        mute.close()


def test_a_loop_exception_is_an_error_answer(server, daemon, sock_path):
    daemon.status = lambda: 1 / 0
    answer = raw(sock_path, b'{"cmd": "status"}\n')
    assert answer == {"ok": False, "code": "internal",
                      "error": "internal error: ZeroDivisionError('division by zero')"}


# ------------------------------------------------------------------ credentials


def test_credential_rule():
    assert is_allowed(0, {0}, None, own_uid=0)
    assert is_allowed(1000, {1000, 990}, 990, own_uid=0)          # member of group havip
    assert not is_allowed(1000, {1000}, 990, own_uid=0)
    assert not is_allowed(65534, {65534}, None, own_uid=0)         # no havip group: root only
    assert is_allowed(1000, {1000}, None, own_uid=1000)            # the daemon's own user


def test_peer_credentials_of_this_process():
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_credentials(a) == (os.getpid(), os.geteuid(), os.getegid())


def _as_nobody(fn, uid: int = 65534, gid: int = 65534, groups: tuple[int, ...] = ()) -> str:
    """Run fn() -> str in a child process as an unprivileged user (nobody by default);
    return what it returned (or the exception it raised)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            out = str(fn())
        except BaseException as exc:  # noqa: BLE001 - report everything to the parent
            out = f"child failed: {exc!r}"
        finally:
            os.write(w, out.encode())
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def shared_dir():
    """A directory any user can traverse (pytest's tmp_path is private to root)."""
    d = tempfile.mkdtemp(prefix="havip-ctl-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_non_root_peer_is_refused_by_credentials(daemon, shared_dir):
    require(os.geteuid() == 0, "needs root to switch to an unprivileged user")
    path = os.path.join(shared_dir, "master.sock")
    srv = ControlServer(path, daemon, log=RecLog(), group=None)
    os.chmod(path, 0o666)           # a careless mode: the credential check must still hold
    try:
        def child():
            try:
                return client.request(path, {"cmd": "pause"}, 2)
            except client.PermissionDenied as exc:
                return str(exc)
        assert _as_nobody(child) == ("permission denied: uid 65534 may not use the control socket "
                                     "(only root)")
        assert ("warning", "control_denied") in [(lvl, e) for lvl, e, _ in srv.log.lines]
        assert not any(isinstance(e, PauseChanged) for e in daemon.fed)
    finally:
        srv.close()


def test_non_root_user_cannot_open_a_0660_socket(daemon, shared_dir):
    require(os.geteuid() == 0, "needs root to switch to an unprivileged user")
    path = os.path.join(shared_dir, "master.sock")
    srv = ControlServer(path, daemon, log=RecLog(), group=None)
    try:
        def child():
            try:
                return client.request(path, {"cmd": "status"}, 2)
            except client.PermissionDenied as exc:
                return str(exc)
        assert _as_nobody(child) == (f"permission denied: cannot open {path}; "
                                     "run as root or as a member of group havip")
    finally:
        srv.close()


def test_members_of_the_admin_group_are_let_in(daemon, shared_dir):
    """The socket's group (here nogroup, standing in for havip) lets a member in, through
    the file mode and through the credential check; a supplementary group is enough."""
    require(os.geteuid() == 0, "needs root to switch to an unprivileged user")
    group = grp.getgrgid(65534)              # nogroup on Debian, nobody elsewhere
    admin = group.gr_gid
    path = os.path.join(shared_dir, "master.sock")
    srv = ControlServer(path, daemon, log=RecLog(), group=group.gr_name)
    try:
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, admin, 0o660)

        def child():
            try:
                return client.request(path, {"cmd": "status"}, 2)["status"]["state"]
            except ControlError as exc:
                return str(exc)
        assert _as_nobody(child, uid=4242, gid=4242, groups=(admin,)) == "backup"
        assert _as_nobody(child, uid=4242, gid=4242).startswith("permission denied: cannot open")
    finally:
        srv.close()


def test_a_directory_other_users_can_write_is_refused(daemon, shared_dir):
    # control.socket: /tmp/havip.sock. Any local user could squat the path first (a socket
    # that answers: "another havip is already serving it", the daemon did not start) or,
    # without the sticky bit, swap the temporary name before the chmod/rename.
    require(os.geteuid() == 0, "needs root to switch to an unprivileged user")
    os.chmod(shared_dir, 0o1777)
    path = os.path.join(shared_dir, "master.sock")

    def squat():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(1)
        time.sleep(3)
        return "squatted"

    pid = os.fork()
    if pid == 0:                     # an unprivileged local user, holding the path
        try:
            os.setgid(65534)
            os.setuid(65534)
            squat()
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 3
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ControlError) as err:
            ControlServer(path, daemon, log=RecLog(), group=None)
        assert str(err.value) == (f"control socket {path}: {shared_dir} can be written by other users, who "
                                  "could take the socket's place; use a directory only root can write, such "
                                  "as /run/havip")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
