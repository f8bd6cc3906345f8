"""Hostile clients of the control socket (issue 9, finding 5): bad bytes, slow clients,
bursts and floods of connections get a clean answer or a closed connection; the server
lives on and `status` keeps answering."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from havip.control import client
from havip.control.serve import connection_cap
from havip.control.server import ControlServer
from tests.unit.fake_daemon import RecLog


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "master.sock")


@pytest.fixture
def log():
    return RecLog()


@pytest.fixture
def server(daemon, sock_path, log):
    srv = ControlServer(sock_path, daemon, log=log, loop_timeout=0.5)
    yield srv
    srv.close()


def exchange(path: str, data: bytes, timeout: float = 3.0) -> list[bytes]:
    """Send `data`, then read until the server closes: the lines it answered."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    return buf.splitlines()


def assert_alive(path: str) -> None:
    assert client.request(path, {"cmd": "status"}, 3)["status"]["state"] == "backup"


BAD = {
    "invalid-utf8": (b'{"cmd": "st\xc3(tus"}\n', "bad request: not UTF-8 (byte 0xc3 at offset 11)"),
    "utf16-bom": ('{"cmd": "status"}'.encode("utf-16") + b"\n", "bad request: not UTF-8 (byte 0xff at offset 0)"),
    "utf8-bom": (b'\xef\xbb\xbf{"cmd": "status"}\n', "bad request: starts with a byte-order mark"),
    "nul": (b'{"cmd": "status"}\x00\n', "bad request: NUL byte at offset 17"),
    "nul-only": (b"\x00\x00\x00\n", "bad request: NUL byte at offset 0"),
    "5000-digits": (b'{"cmd": "status", "force": ' + b"9" * 5000 + b"}\n", "bad request: unacceptable JSON value"),
    "deep-list": (b"[" * 20000 + b"]" * 20000 + b"\n", "bad request: JSON nested too deeply"),
    "deep-object": (b'{"a":' * 10000 + b"1" + b"}" * 10000 + b"\n", "bad request: JSON nested too deeply"),
    "deep-cmd": (b'{"cmd": ' + b"[" * 900 + b"]" * 900 + b"}\n", "unknown command [[[...]]]: expected status"),
    "long-cmd": (b'{"cmd": "' + b"x" * 60000 + b'"}\n', "unknown command 'xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx'"),
    "too-long": (b" " * 70000 + b"\n", "bad request: longer than 65536 bytes"),
    "nan-force": (b'{"cmd": "failover", "force": NaN}\n', "bad request: force: nan: must be true or false"),
    "empty": (b"\n", "bad request: not JSON (Expecting value)"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_bytes_get_one_clean_answer_and_no_traceback(server, sock_path, log, name):
    data, expected = BAD[name]
    lines = exchange(sock_path, data)
    assert len(lines) == 1, lines
    answer = json.loads(lines[0])
    assert answer["ok"] is False and answer["code"] in ("bad_request", "unknown_command")
    assert answer["error"].startswith(expected), answer["error"]
    assert len(answer["error"]) < 300
    assert not [e for e in log.lines if e[0] in ("exception", "error")], log.lines
    assert_alive(sock_path)


def test_a_request_has_one_deadline_not_one_per_recv(daemon, sock_path):
    # A byte every 0.2 s would reset a per-recv timeout of 0.6 s forever.
    srv = ControlServer(sock_path, daemon, log=RecLog(), request_timeout=0.6)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock_path)
            t0 = time.monotonic()
            closed_after = None
            for byte in b'{"cmd": "status"' * 3:
                try:
                    s.send(bytes([byte]))
                except OSError:
                    closed_after = time.monotonic() - t0
                    break
                time.sleep(0.2)
                s.setblocking(False)
                try:
                    if s.recv(65536, socket.MSG_PEEK) is not None:
                        closed_after = time.monotonic() - t0
                        break
                except BlockingIOError:
                    pass
                finally:
                    s.setblocking(True)
            assert closed_after is not None and closed_after < 1.5, closed_after
            s.settimeout(1)
            answer = json.loads(s.makefile("rb").readline())
        assert answer["error"] == "bad request: no complete request line within 0.6s"
        assert srv.counters.get("request_timeout") == 1
        assert_alive(sock_path)
    finally:
        srv.close()


def test_a_burst_of_1000_connects_fits_the_backlog_and_all_are_answered(server, sock_path):
    # Non-blocking connects fail with EAGAIN when the listen backlog is full (it was 5).
    socks, eagain = [], 0
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(sock_path)
            except BlockingIOError:
                eagain += 1
                s.close()
                continue
            # The request goes with the connect, before the server accepts it: a client that
            # sends nothing for evict_after at the connection cap gives way by design (tested
            # below), and a loaded machine must not turn this backlog test into that one.
            s.send(b'{"cmd": "status"}\n')
            socks.append(s)
        assert eagain == 0
        for s in socks:
            s.setblocking(True)
            s.settimeout(20)
        states = [json.loads(s.makefile("rb").readline())["status"]["state"] for s in socks]
        assert states == ["backup"] * 1000
    finally:
        for s in socks:
            s.close()


def test_1000_concurrent_clients_all_get_their_status(server, sock_path):
    results: list[object] = []

    def one():
        try:
            results.append(client.request(sock_path, {"cmd": "status"}, 20)["status"]["state"])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["backup"] * 1000, [r for r in results if r != "backup"][:3]


def test_held_connections_are_capped_and_slow_ones_give_way(daemon, sock_path):
    srv = ControlServer(sock_path, daemon, log=RecLog(), max_connections=16, evict_after=0.2)
    held = []
    try:
        for _ in range(200):                  # connect and never send: a thread each, before
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock_path)
            held.append(s)
        deadline = time.monotonic() + 2
        while srv.counters.get("at_capacity", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv._listener.connections <= 16
        t0 = time.monotonic()
        assert_alive(sock_path)                # an idle one gives way to a client that talks
        assert time.monotonic() - t0 < 3
        assert srv.counters.get("evicted_slow", 0) >= 1
        assert srv._listener.connections <= 16
    finally:
        for s in held:
            s.close()
        srv.close()


def test_worker_threads_are_bounded(daemon, sock_path):
    srv = ControlServer(sock_path, daemon, log=RecLog(), workers=2)
    held = []
    try:
        before = threading.active_count()
        for _ in range(50):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock_path)
            held.append(s)
        assert_alive(sock_path)
        assert threading.active_count() - before <= 2
    finally:
        for s in held:
            s.close()
        srv.close()


@pytest.mark.parametrize("nofile, cap", [(1024, 128), (256, 32), (32, 8), (65536, 256), (1 << 20, 256)])
def test_connection_cap_stays_well_below_the_fd_limit(nofile, cap):
    assert connection_cap(nofile) == cap


def test_concurrent_status_requests_share_one_snapshot(server, daemon, sock_path):
    calls = []
    real = daemon.status
    daemon.status = lambda: calls.append(1) or real()
    results: list[object] = []
    server.loop_timeout = 15                # a slow CI machine must not turn the wait into timeouts
    daemon.hang.set()                       # the loop is busy while the burst arrives
    threads = [threading.Thread(target=lambda: results.append(
        client.request(sock_path, {"cmd": "status"}, 5)["status"]["state"])) for _ in range(50)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10       # every request is in before the loop wakes up
    while server._listener.connections < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.hang.clear()
    for t in threads:
        t.join(10)
    assert results == ["backup"] * 50
    # The 4 workers share each snapshot in flight: about one per 4 requests, not 50. Only
    # the first is certain (the loop hangs while all 4 wait on it); how the rest line up
    # depends on the scheduler (26 were seen on a loaded 2-core machine).
    assert len(calls) <= 50 - 3, len(calls)
