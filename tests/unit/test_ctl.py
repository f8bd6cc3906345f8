"""havipctl against the real ControlServer serving a fake daemon."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from havip.control.server import ControlServer
from havip.ctl import main
from tests.unit.fake_daemon import FakeDaemon, RecLog


@pytest.fixture
def env(tmp_path):
    """An empty config and run directory, so /etc/havip and /run/havip are never read."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    return {"HAVIP_CONF_DIR": str(tmp_path / "etc"), "HAVIP_RUN_DIR": str(tmp_path / "run")}


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(daemon=None, name="master", **kw):
        daemon = daemon or FakeDaemon(**kw)
        path = str(tmp_path / "run" / f"{name}.sock")
        started.append((daemon, ControlServer(path, daemon, log=RecLog(), loop_timeout=0.3)))
        return daemon, path
    yield start
    for daemon, srv in started:
        srv.close()
        daemon.close()


def ctl(env, *args):
    return CliRunner().invoke(main, list(args), env=env)


def write_config(env, name, socket=None):
    text = ("interface: eth0\nvirtual_router_id: 51\nvirtual_ipaddresses: [192.0.2.10/24]\n"
            + (f"control: {{socket: {socket}}}\n" if socket else ""))
    with open(f"{env['HAVIP_CONF_DIR']}/{name}.yaml", "w") as f:
        f.write(text)


# ------------------------------------------------------------------ status


def test_status_table_for_people(env, serve):
    daemon, path = serve()
    daemon.hear_master("192.0.2.2", 150)
    r = ctl(env, "-s", path, "status")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert re.search(r"^instance\s+master$", out, re.M)
    assert re.search(r"^state\s+backup for \d+\.\ds$", out, re.M)
    assert re.search(r"^reason\s+started; waiting 3\.\d+s for a master's advert$", out, re.M)
    assert re.search(r"^priority\s+100 configured, 100 effective$", out, re.M)
    assert re.search(r"^VIPs\s+192\.0\.2\.10/24 \(not attached\)$", out, re.M)
    assert re.search(r"^master\s+192\.0\.2\.2 priority 150, advert every 1s, last seen 0\.0s ago$", out, re.M)
    assert re.search(r"^peers heard\s+192\.0\.2\.2$", out, re.M)
    assert re.search(r"^checks\s+1/1 ok$", out, re.M)
    assert re.search(r"^  NAME\s+OK\s+LATENCY\s+REASON$", out, re.M)
    assert re.search(r"^  docker\s+yes\s+4ms\s+container milvus is running$", out, re.M)
    assert re.search(r"^container\s+not supervised$", out, re.M)
    assert re.search(r"^transitions\s+1$", out, re.M)
    assert re.search(r"^drops\s+bad_ttl 2$", out, re.M)
    assert re.search(r"^paused\s+no$", out, re.M)
    assert r.stderr == ""


def test_status_json_is_the_daemons_dict(env, serve):
    daemon, path = serve()
    r = ctl(env, "-s", path, "status", "--json")
    assert r.exit_code == 0
    st = json.loads(r.stdout)
    assert st == daemon.run(daemon.status)


def test_status_master_exits_0_and_says_this_host(env, serve):
    daemon, path = serve()
    daemon.become_master()
    r = ctl(env, "-s", path, "status")
    assert r.exit_code == 0
    assert re.search(r"^master\s+this host$", r.stdout, re.M)
    assert re.search(r"^VIPs\s+192\.0\.2\.10/24 \(attached\)$", r.stdout, re.M)


def test_status_fault_exits_1(env, serve):
    daemon, path = serve()
    daemon.set_health(False)
    r = ctl(env, "-s", path, "status")
    assert r.exit_code == 1
    assert re.search(r"^reason\s+cannot serve if promoted: data path missing$", r.stdout, re.M)


def test_status_paused_is_shown(env, serve):
    daemon, path = serve()
    assert ctl(env, "-s", path, "pause").stdout == "paused: no automatic transitions and no container actions\n"
    r = ctl(env, "-s", path, "status")
    assert r.exit_code == 0
    assert re.search(r"^state\s+backup for .* \(paused\)$", r.stdout, re.M)
    assert re.search(r"^paused\s+yes: no automatic transitions, no container actions$", r.stdout, re.M)
    assert ctl(env, "-s", path, "resume").stdout == "resumed: automatic transitions are on again\n"


def test_not_running_exits_3_with_one_line(env, tmp_path):
    path = str(tmp_path / "run" / "master.sock")
    r = ctl(env, "-s", path, "status")
    assert r.exit_code == 3
    assert r.stderr == f"havip is not running: no control socket at {path}\n"
    assert r.stdout == ""


def test_nothing_configured_exits_3(env):
    r = ctl(env, "status")
    assert r.exit_code == 3
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith("havip is not running: no config in ")


def test_busy_daemon_exits_4_with_one_line(env, serve):
    daemon, path = serve()
    daemon.hang.set()
    try:
        r = ctl(env, "-s", path, "status")
    finally:
        daemon.hang.clear()
    assert r.exit_code == 4
    assert r.stderr == "daemon busy: the loop did not answer within 0.3s; nothing was changed\n"


def test_unknown_state_exits_4(env, serve):
    daemon, path = serve()
    daemon.status = lambda: {"instance": "master", "state": "init", "transitions": 0}
    assert ctl(env, "-s", path, "status").exit_code == 4


def test_every_configured_instance_is_shown(env, serve, tmp_path):
    _, master = serve(name="master")
    write_config(env, "master")                                    # default socket: not running
    write_config(env, "other", socket=master)                      # points at the live one
    r = ctl(env, "status")
    assert r.exit_code == 3                                        # the worst of 0 and 3
    assert r.stderr == "master: havip is not running: no control socket at /run/havip/master.sock\n"
    assert re.search(r"^state\s+backup", r.stdout, re.M)


def test_instance_name_with_s_and_socket_fallback(env, serve):
    serve(name="master")
    serve(name="second")
    r = ctl(env, "-s", "second", "status", "--json")               # no config: found in the run dir
    assert r.exit_code == 0 and json.loads(r.stdout)["state"] == "backup"
    r = ctl(env, "status", "--json")
    assert r.exit_code == 0
    assert len(r.stdout.splitlines()) == 2                          # one JSON object per instance


# ------------------------------------------------------------------ failover


def test_failover_from_backup_waits_for_milvus(env, serve):
    daemon, path = serve(supervise=True, start_delay=0.3)
    daemon.hear_master("192.0.2.2", 150)        # it hands over: priority 0 once its milvus is down
    r = ctl(env, "-s", path, "failover")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("switchover requested: planned takeover requested by the operator")
    m = re.fullmatch(r"switchover done in (\d+\.\d\d)s: now master, milvus running", lines[1])
    assert m and float(m[1]) >= 0.3
    assert daemon.run(lambda: str(daemon.machine.container)) == "running"


def test_failover_from_master_hands_over(env, serve):
    daemon, path = serve(supervise=True)
    daemon.become_master()
    assert daemon.wait_until(lambda: daemon.machine.container == "running")
    r = ctl(env, "-s", path, "failover")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0] == ("switchover requested: planned switchover requested by the operator; "
                                        "stopping milvus before handing over")
    assert re.fullmatch(r"switchover done in \d+\.\d\ds: now backup", r.stdout.splitlines()[1])


def test_failover_refused_exits_1_with_the_reason(env, serve):
    daemon, path = serve(peers=())
    daemon.become_master()
    r = ctl(env, "-s", path, "failover")
    assert r.exit_code == 1
    assert r.stderr.startswith("refused switchover: no healthy havip backup heard")
    assert r.stderr.count("\n") == 1
    assert ctl(env, "-s", path, "failover", "--force").exit_code == 0


def test_failover_times_out(env, serve):
    daemon, path = serve(supervise=True, start_delay=30)
    daemon.hear_master("192.0.2.2", 150)
    r = ctl(env, "-s", path, "failover", "--timeout", "0.5")
    assert r.exit_code == 1
    assert r.stderr == "switchover not done within 0.5s: master, container starting\n"


def test_failover_needs_one_instance(env, serve):
    serve(name="a")
    serve(name="b")
    r = ctl(env, "failover")
    assert r.exit_code == 4
    assert r.stderr == "several instances on this host (a, b); choose one with -s INSTANCE\n"


def test_an_invalid_config_still_names_its_socket(env, serve):
    _, path = serve(name="edited")
    with open(f"{env['HAVIP_CONF_DIR']}/edited.yaml", "w") as f:
        f.write(f"priority: 300\ncontrol: {{socket: {path}}}\n")    # mid-edit: invalid, daemon runs the old one
    r = ctl(env, "status", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "backup"


@pytest.mark.parametrize("lease, line", [
    (None, "none"),
    ({"path": "/s/.havip-lease", "held_here": True, "holder": "h1", "state": "held", "epoch": 4},
     "held by this host (h1, epoch 4)"),
    ({"path": "/s/.havip-lease", "held_here": False, "holder": "h1", "state": "held", "epoch": 4},
     "held by h1 (epoch 4; /s/.havip-lease)"),
    ({"path": "/s/.havip-lease", "held_here": False, "holder": "h1", "state": "released", "epoch": 4},
     "released by h1 (epoch 4; /s/.havip-lease)"),
    ({"path": "/s/.havip-lease", "held_here": False, "holder": None, "state": None, "epoch": None},
     "free (/s/.havip-lease)"),
    ({"path": "/s/.havip-lease", "held_here": False, "error": "Input/output error"},
     "/s/.havip-lease: cannot read: Input/output error"),
])
def test_status_shows_the_storage_lease(lease, line):
    from havip.ctl import render

    out = render({"instance": "master", "state": "master", "since_seconds": 1, "lease": lease})
    assert re.search(rf"^storage lease\s+{re.escape(line)}$", out, re.M), out


def test_status_says_when_a_host_holds_back():
    from havip.ctl import render

    base = {"instance": "master", "state": "backup", "since_seconds": 1}
    assert "held back" not in render(base)
    assert re.search(r"^held back\s+yes: will not preempt .*`havipctl failover` on this host takes over$",
                     render({**base, "hold": True}), re.M)


def test_status_says_when_this_host_has_not_touched_the_lease():
    from havip.ctl import render

    out = render({"instance": "b", "state": "backup", "since_seconds": 1,
                  "lease": {"path": "/s/.havip-lease", "held_here": False, "known": False, "holder": None}})
    assert re.search(r"^storage lease\s+not touched by this host yet \(/s/\.havip-lease\)$", out, re.M), out


# ------------------------------------------------------------------ hostile paths and answers (issue 9, finding 8)


@pytest.mark.parametrize("kind, shown", [("file", "a regular file"), ("dir", "a directory"), ("fifo", "a FIFO")])
def test_something_else_at_the_socket_path_is_named(env, tmp_path, kind, shown):
    import os

    path = tmp_path / "run" / "master.sock"
    {"file": lambda: path.write_text("x"), "dir": path.mkdir, "fifo": lambda: os.mkfifo(path)}[kind]()
    r = ctl(env, "-s", str(path), "status")
    assert r.exit_code == 3
    assert r.stderr.strip() == (f"havip is not running: {path} is {shown}, not a socket; the daemon will not "
                                "start while it is there (remove it, or check control.socket in the configuration)")


@pytest.mark.parametrize("body", [
    "interface: eth0\ncontrol: {socket: /x/y.sock}\n\x00\n",
    "control: " + "[" * 1200 + "]" * 1200 + "\n",
    "a:\n" + "- " * 3000 + "x\n",
    "\udcff",
], ids=["nul", "deep-flow", "deep-block", "not-utf8"])
def test_a_broken_config_in_the_config_dir_is_no_traceback(env, body):
    with open(f"{env['HAVIP_CONF_DIR']}/broken.yaml", "wb") as f:
        f.write(body.encode("utf-8", "surrogateescape"))
    r = ctl(env, "status")
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 3
    note, error = r.stderr.strip().splitlines()
    assert note.startswith(f"note: {env['HAVIP_CONF_DIR']}/broken.yaml: ")
    assert note.endswith("(assuming the socket /run/havip/broken.sock)")
    assert error == "havip is not running: no control socket at /run/havip/broken.sock"


def _canned(tmp_path, answer: object):
    """A socket that answers every request with `answer` (a daemon of another version);
    bytes are sent as they are."""
    import socket
    import threading

    path = str(tmp_path / "run" / "odd.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer if isinstance(answer, bytes) else json.dumps(answer).encode() + b"\n")

    threading.Thread(target=serve, daemon=True).start()
    return srv, path


@pytest.mark.parametrize("cmd, answer, message", [
    ("status", {"ok": True}, "daemon answered without status in the answer (a different havip version?)"),
    ("status", {"ok": True, "status": []}, "daemon answered without a status object (a different havip version?)"),
    ("status", {"ok": True, "status": {}}, "daemon answered without state in the status (a different havip version?)"),
    ("failover", {"ok": True}, "daemon answered without accepted, reason in the answer (a different havip version?)"),
    ("failover", {"ok": True, "accepted": True, "reason": "ok"},
     "daemon answered without from, transitions in the answer (a different havip version?)"),
    ("pause", {"ok": True}, "daemon answered without reason in the answer (a different havip version?)"),
])
def test_an_answer_without_the_expected_fields_is_named(env, tmp_path, cmd, answer, message):
    srv, path = _canned(tmp_path, answer)
    try:
        r = ctl(env, "-s", path, cmd)
    finally:
        srv.close()
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 4 and r.stderr.strip() == message and "None" not in r.stdout


def test_odd_status_values_render_without_a_traceback(env, tmp_path):
    odd = {"state": "backup", "since_seconds": "long", "priority": 7, "vips": "x", "master": {"address": 1},
           "peers": [{"instance": "evil\nstate        master"}, 3], "checks": [{"latency": "fast"}, None],
           "drops": [1], "lease": "held", "instance": "a\x1b[2Jb"}
    srv, path = _canned(tmp_path, {"ok": True, "status": odd})
    try:
        r = ctl(env, "-s", path, "status")
    finally:
        srv.close()
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 0
    assert "evil\\nstate" in r.stdout and not any(line.startswith("state        master") for line in
                                                   r.stdout.splitlines())
    assert "\x1b" not in r.stdout


@pytest.mark.parametrize("cmd, answer, message", [
    ("status", b"[" * 100000 + b"\n", "not a JSON answer: b'[[[["),
    ("status", b'{"ok": true, "status": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", "not a JSON answer: b'{\"ok\""),
    ("status", {"ok": False, "code": [], "error": "no"}, "no"),
    ("pause", {"ok": False, "code": {"a": 1}, "error": ["x"]}, "['x']"),
    ("failover", {"ok": True, "accepted": True, "reason": "ok", "from": "backup", "transitions": None,
                  "status": {"state": "backup", "transitions": 1}},
     "daemon answered with transitions None, not a number (a different havip version?)"),
    ("failover", {"ok": True, "accepted": True, "reason": "ok", "from": ["backup"], "transitions": 1,
                  "status": {"state": "backup", "transitions": 1}},
     "daemon answered with from ['backup'], not a state (a different havip version?)"),
], ids=["deep", "deep-status", "code-list", "code-dict", "transitions-null", "from-list"])
def test_an_odd_answer_is_one_line_not_a_traceback(env, tmp_path, cmd, answer, message):
    # A JSON answer nested deeper than the recursion limit, an error code that is no
    # string, and a failover answer whose fields have the wrong types raised
    # RecursionError / TypeError in havipctl.
    srv, path = _canned(tmp_path, answer)
    try:
        r = ctl(env, "-s", path, cmd, *(["--timeout", "0.5"] if cmd == "failover" else []))
    finally:
        srv.close()
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code in (1, 4), r.exit_code
    assert message in r.stderr.strip().splitlines()[-1], r.stderr


@pytest.mark.parametrize("transitions", [None, "7", [], {}, 2.5])
def test_switchover_outcome_survives_an_odd_transition_count(transitions):
    from havip.control.client import switchover_outcome

    assert switchover_outcome("backup", 3, {"state": "backup", "transitions": transitions}) == (None, "still backup")
    assert switchover_outcome("backup", transitions, {"state": "backup", "transitions": 4})[0] is not True
