"""realtime_priority: the config key, the scheduling call and its refusal, the status line,
the unit file. The running daemon's threads are checked in
tests/integration/test_realtime_loop.py."""

from __future__ import annotations

import configparser
import errno
import os

import pytest
import structlog
from click.testing import CliRunner

from havip import config
from havip.cli import main
from havip.ctl import render
from havip.daemon import realtime
from havip.daemon.loop import Adapters, Daemon
from havip.errors import ConfigError
from havip.migrate import convert
from tests.conftest import REPO
from tests.fakes import FakeAnnouncer, FakeClock, FakeLink, FakeSocket, FakeVips

BASE = {"interface": "eth0", "virtual_router_id": 51, "priority": 110, "advert_interval": 1,
        "authentication": {"type": "pass", "password": "1111"}, "virtual_ipaddresses": ["198.18.0.50/24"]}


def test_default_is_off_as_in_keepalived():
    assert config.parse(BASE).realtime_priority == 0


@pytest.mark.parametrize("value", [0, 1, 10, 99])
def test_accepted_priorities(value):
    assert config.parse({**BASE, "realtime_priority": value}).realtime_priority == value


@pytest.mark.parametrize("value, line", [
    (100, "realtime_priority: 100: must be between 0 and 99"),
    (-1, "realtime_priority: -1: must be between 0 and 99"),
    ("high", "realtime_priority: high:"),
])
def test_refused_priorities_say_path_value_reason(value, line):
    with pytest.raises(ConfigError) as err:
        config.parse({**BASE, "realtime_priority": value})
    assert any(p.startswith(line) for p in err.value.problems), err.value.problems


class FakeSched:
    """os.sched_* for one thread, that can be told to refuse."""

    def __init__(self, refuse: int | None = None):
        self.policy, self.prio, self.refuse, self.calls = os.SCHED_OTHER, 0, refuse, []

    def set(self, pid, policy, param):
        self.calls.append((pid, policy, param.sched_priority))
        if self.refuse:
            raise OSError(self.refuse, os.strerror(self.refuse))
        self.policy, self.prio = policy, param.sched_priority

    def get(self, pid):
        return self.policy

    def param(self, pid):
        return os.sched_param(self.prio)

    def apply(self, priority):
        return realtime.apply(priority, setscheduler=self.set, getscheduler=self.get, getparam=self.param)


def test_apply_sets_the_calling_thread_with_reset_on_fork():
    s = FakeSched()
    got = s.apply(10)
    # pid 0 is the calling thread on Linux; RESET_ON_FORK keeps threads started later at SCHED_OTHER.
    assert s.calls == [(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, 10)]
    assert (got.policy, got.priority, got.requested) == ("SCHED_RR", 10, 10)


def test_zero_touches_nothing():
    s = FakeSched()
    got = s.apply(0)
    assert s.calls == [] and got.policy == "SCHED_OTHER" and got.detail == "off (realtime_priority: 0)"


def test_eperm_is_a_sentence_not_an_exception():
    got = FakeSched(refuse=errno.EPERM).apply(10)
    assert got.policy == "SCHED_OTHER" and got.requested == 10
    assert "refused by the kernel" in got.detail and "LimitRTPRIO" in got.detail and "RestrictRealtime" in got.detail


def _daemon(sched: FakeSched, **over) -> Daemon:
    cfg = config.parse({**BASE, **over}, default_instance="test")
    sock = FakeSocket()
    ad = Adapters(make_socket=lambda: sock, vips=FakeVips(), announcer=FakeAnnouncer(), link=FakeLink())
    return Daemon(cfg, ad, log=structlog.get_logger("test"), clock=FakeClock(), set_realtime=sched.apply)


def test_daemon_refused_keeps_running_and_says_so_in_status():
    d = _daemon(FakeSched(refuse=errno.EPERM), realtime_priority=10)
    with structlog.testing.capture_logs() as logs:
        d.schedule()
        d.start()
    assert [e for e in logs if e["event"] == "realtime_refused"]
    st = d.status()
    assert st["scheduling"]["policy"] == "SCHED_OTHER" and st["scheduling"]["requested"] == 10
    assert "REFUSED: asked for SCHED_RR 10: refused by the kernel" in render(st)


def test_daemon_status_shows_the_loop_policy():
    d = _daemon(FakeSched(), realtime_priority=20)
    d.schedule()
    assert "SCHED_RR 20 (loop thread at SCHED_RR 20; other threads at SCHED_OTHER)" in render(d.status())


def test_subsecond_adverts_without_realtime_are_warned_at_start_and_by_check_config(tmp_path):
    d = _daemon(FakeSched(), version=3, advert_interval=0.1, authentication={"type": "none"})
    with structlog.testing.capture_logs() as logs:
        d.schedule()
    assert [e for e in logs if e["event"] == "realtime_advice"]
    f = tmp_path / "v3.yaml"
    f.write_text("interface: eth0\nvirtual_router_id: 51\nversion: 3\nadvert_interval: 0.1\n"
                 "virtual_ipaddresses: [198.18.0.50/24]\n")
    res = CliRunner().invoke(main, ["check-config", str(f)])
    assert res.exit_code == 0
    assert "warning: realtime_priority: 0: adverts more often than once a second" in res.output
    f.write_text(f.read_text() + "realtime_priority: 10\n")
    assert "warning" not in CliRunner().invoke(main, ["check-config", str(f)]).output


def test_keepalived_vrrp_rt_priority_is_migrated():
    text = ("global_defs {\n  vrrp_rt_priority 30\n}\nvrrp_instance VI_1 {\n  interface eth0\n"
            "  virtual_router_id 51\n  priority 100\n  advert_int 1\n  virtual_ipaddress {\n    198.18.0.50/24\n  }\n}\n")
    res = convert(text)
    assert res.configs["vi_1"]["realtime_priority"] == 30, res


def test_unit_allows_realtime_without_cap_sys_nice():
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read_string((REPO / "systemd" / "havip@.service").read_text())
    s = cp["Service"]
    assert s["RestrictRealtime"] == "no" and s["LimitRTPRIO"] == "99"
    assert "CAP_SYS_NICE" not in s["CapabilityBoundingSet"]


def test_a_reload_names_realtime_priority_as_needing_a_restart(tmp_path):
    import yaml

    from havip.daemon import reload

    old = config.parse(BASE, default_instance="t")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({**BASE, "realtime_priority": 10, "priority": 120}))
    cfg, applied, restart = reload.plan(old, str(path))
    assert applied == ["priority"] and restart == ["realtime_priority"] and cfg.realtime_priority == 0
