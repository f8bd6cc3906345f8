"""The sd_notify protocol against a real AF_UNIX datagram listener standing in for systemd."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from havip.daemon.sdnotify import SdNotify


class Listener:
    """What systemd does: a datagram socket at $NOTIFY_SOCKET; each datagram is one message."""

    def __init__(self, address: str | bytes):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2)

    def recv(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def nothing(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(4096)
            return False
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(2)

    def close(self):
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request, tmp_path):
    """(listener, environment) for a filesystem socket and an abstract-namespace one."""
    if request.param == "path":
        addr = str(tmp_path / "notify")
        env_value = addr
    else:
        name = f"havip-test-{uuid.uuid4().hex}"
        addr = b"\0" + name.encode()
        env_value = "@" + name
    listener = Listener(addr)
    yield listener, {"NOTIFY_SOCKET": env_value}
    listener.close()


def test_ready_status_stopping_watchdog(systemd):
    listener, env = systemd
    sd = SdNotify(env)
    assert sd.enabled
    assert sd.ready("backup: started; waiting 3.61s for a master's advert")
    assert listener.recv() == ["READY=1", "STATUS=backup: started; waiting 3.61s for a master's advert"]
    assert sd.status("master: no master advertised\nwithin 3.61s")
    assert listener.recv() == ["STATUS=master: no master advertised within 3.61s"]   # one line, always
    assert sd.stopping()
    assert listener.recv() == ["STOPPING=1"]
    assert sd.watchdog()
    assert listener.recv() == ["WATCHDOG=1"]
    assert sd.reloading()
    msg = listener.recv()
    assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=") and int(msg[1].split("=")[1]) > 0
    sd.close()


def test_no_notify_socket_is_a_silent_no_op():
    sd = SdNotify({})
    assert not sd.enabled
    assert sd.ready("x") is False
    assert sd.watchdog() is False
    assert sd.watchdog_interval() is None
    assert sd.kick(0.0) is False
    assert sd.errors == 0


def test_watchdog_interval_and_pid(systemd):
    _, env = systemd
    assert SdNotify({**env, "WATCHDOG_USEC": "10000000"}).watchdog_interval() == 10.0
    mine = {**env, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    assert SdNotify(mine).watchdog_interval() == 10.0
    # The watchdog belongs to another process (we were started by a wrapper): not ours to feed.
    assert SdNotify({**env, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert SdNotify({**env, "WATCHDOG_USEC": "nonsense"}).watchdog_interval() is None
    assert SdNotify({**env, "WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert SdNotify({"WATCHDOG_USEC": "10000000"}).watchdog_interval() is None   # no socket to ping


def test_kick_pings_every_half_interval(systemd):
    listener, env = systemd
    sd = SdNotify({**env, "WATCHDOG_USEC": "2000000"})          # WatchdogSec=2
    assert sd.kick(100.0)                                         # first call: at once
    assert listener.recv() == ["WATCHDOG=1"]
    assert not sd.kick(100.5)
    assert not sd.kick(100.99)
    assert listener.nothing()
    assert sd.kick(101.0)                                         # interval / 2 later
    assert listener.recv() == ["WATCHDOG=1"]
    assert not sd.kick(101.2)
    assert sd.kick(102.5)
    assert listener.recv() == ["WATCHDOG=1"]


def test_unset_environment_hides_it_from_children(systemd):
    _, env = systemd
    env = {**env, "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    sd = SdNotify(env, unset_environment=True)
    assert env == {"PATH": "/bin"}
    assert sd.enabled and sd.watchdog_interval() == 5.0


def test_a_vanished_listener_is_counted_not_raised(tmp_path):
    listener = Listener(str(tmp_path / "notify"))
    sd = SdNotify({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    listener.close()
    os.unlink(tmp_path / "notify")
    assert sd.ready() is False
    assert sd.errors == 1
    assert sd.last_error == f"cannot notify systemd at {tmp_path / 'notify'}: No such file or directory"
