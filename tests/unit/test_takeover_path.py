"""The takeover path's timing and order, on a fake clock (issue 11 item 3: the phase-free
takeover against keepalived's): the master-down timer runs from the advert's arrival in
the kernel, the gratuitous ARPs go out as configured, nothing is logged between the VIP
and the first ARP, and the VIP requests are encoded ahead. No timed assertions."""

from __future__ import annotations

import errno
import ipaddress
import struct

import pytest
import structlog

from havip import config
from havip.daemon.loop import MAX_RECEIPT_AGE, Adapters, Daemon, receipt_time
from havip.model import Advert, State
from havip.net.vip import ack_errno, encode_request
from havip.protocol import codec, timing
from tests.fakes import FakeClock, FakeLink, FakeSocket, FakeVips
from tests.unit.fake_daemon import RecLog

V3 = {"interface": "eth0", "virtual_router_id": 51, "priority": 91, "version": 3, "advert_interval": 0.1,
      "virtual_ipaddresses": ["198.18.0.50/24"]}
MASTER = "198.18.0.11"


class Wall:
    """The wall clock, a fixed distance from the fake monotonic clock (as the real ones are)."""

    def __init__(self, clock: FakeClock, offset: float = 1.8e9):
        self.clock, self.offset = clock, offset

    def __call__(self) -> float:
        return self.clock() + self.offset


class OrderedAnnouncer:
    """Records its announcements in a list shared with the log, to see what came first."""

    def __init__(self, order: list):
        self.order = order

    def announce(self, vips) -> int:
        self.order.append("garp")
        return len(list(vips))

    def close(self) -> None:
        pass


class OrderedLog(RecLog):
    def __init__(self, order: list):
        super().__init__()
        self.order = order

    def bind(self, **_kw):
        return self

    def _rec(self, level, event, kw):
        super()._rec(level, event, kw)
        self.order.append(event)


def make(data=None, log=None, announcer=None):
    cfg = config.parse(data or V3, default_instance="test")
    sock, clock = FakeSocket(source="198.18.0.21"), FakeClock()
    ad = Adapters(make_socket=lambda: sock, vips=FakeVips(), announcer=announcer or OrderedAnnouncer([]),
                  link=FakeLink())
    d = Daemon(cfg, ad, log=log or structlog.get_logger("test"), clock=clock, wall=Wall(clock))
    return d, sock, clock


def _advert(priority: int = 110) -> bytes:
    return codec.encode(Advert(3, 51, priority, 0.1, ("198.18.0.50",)), src=MASTER, dst="224.0.0.18")


# ---------------------------------------------------------------- the master-down timer's start


@pytest.mark.parametrize("age, expected_age", [
    (0.0004, 0.0004),               # the usual: read half a millisecond after it arrived
    (0.0, 0.0),
    (-0.5, 0.0),                    # the wall clock stepped back meanwhile: now
    (0.5, MAX_RECEIPT_AGE),         # a stall: counts at most MAX_RECEIPT_AGE
])
def test_receipt_time_is_now_less_the_stamps_age_bounded(age, expected_age):
    now, wall = 500.0, 1.8e9
    assert receipt_time(now, wall, wall - age, 1.0) == pytest.approx(now - expected_age)


def test_receipt_time_without_a_stamp_is_now_and_short_intervals_bound_it_tighter():
    assert receipt_time(500.0, 1.8e9, None, 0.1) == 500.0
    # At 0.02 s adverts a stale advert may count at most 2 ms early.
    assert receipt_time(500.0, 1.8e9, 1.8e9 - 0.5, 0.02) == pytest.approx(500.0 - 0.002)


def test_the_master_down_timer_runs_from_the_adverts_arrival_not_its_processing():
    d, sock, clock = make()
    d.start()
    assert d.machine.state == State.BACKUP
    md = timing.master_down_interval(3, 91, 0.1)
    # The advert arrived 0.7 ms before the loop read it (kernel stamp, wall clock).
    sock.deliver(_advert(), MASTER, stamp=d.wall() - 0.0007)
    d.run_once()
    assert d.machine.master is not None and d.machine.master.address == MASTER
    assert d.machine.master_down_deadline == pytest.approx(clock() - 0.0007 + md)
    # At the RFC's moment after the arrival the backup takes over: not 0.7 ms later.
    clock.advance(md - 0.0007 + 1e-6)
    d.run_once()
    assert d.machine.state == State.MASTER


def test_an_advert_read_long_after_it_arrived_moves_the_timer_at_most_max_receipt_age():
    d, sock, clock = make()
    d.start()
    md = timing.master_down_interval(3, 91, 0.1)
    sock.deliver(_advert(), MASTER, stamp=d.wall() - 0.3)       # the loop stood still 0.3 s
    d.run_once()
    assert d.machine.master_down_deadline == pytest.approx(clock() - min(MAX_RECEIPT_AGE, 0.01) + md)
    assert d.machine.state == State.BACKUP


# ---------------------------------------------------------------- the gratuitous ARPs


def _take_over(garp: dict):
    order: list = []
    d, sock, clock = make({**V3, "garp": {"delay": 0, "refresh": 0, **garp}}, announcer=OrderedAnnouncer(order))
    d.start()
    clock.advance(timing.master_down_interval(3, 91, 0.1))
    d.run_once()
    assert d.machine.state == State.MASTER
    return d, clock, order


def test_repeat_with_interval_zero_sends_every_announcement_at_once():
    d, clock, order = _take_over({"repeat": 5, "interval": 0})
    assert order.count("garp") == 5                 # keepalived's garp_master_repeat 5, garp_interval 0
    assert d.executor.counters["garp_sent"] == 5


def test_spaced_announcements_go_out_when_due():
    d, clock, order = _take_over({"repeat": 3, "interval": 0.05})
    assert order.count("garp") == 1
    clock.advance(0.051)
    d.run_once()
    assert order.count("garp") == 2
    clock.advance(0.051)
    d.run_once()
    assert order.count("garp") == 3


def test_nothing_is_logged_between_the_vip_and_the_first_gratuitous_arp():
    order: list = []
    log = OrderedLog(order)
    d, sock, clock = make(log=log, announcer=OrderedAnnouncer(order))
    d.start()
    order.clear()
    clock.advance(timing.master_down_interval(3, 91, 0.1))
    d.run_once()
    assert d.machine.state == State.MASTER
    assert order[0] == "garp", order                # vip_added and transition come after it
    assert "vip_added" in order and "transition" in order


# ---------------------------------------------------------------- the VIP's netlink requests


def test_vip_requests_are_what_ip_address_add_and_del_send():
    add4 = encode_request("add", 7, ipaddress.ip_interface("198.18.0.50/24"))
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", add4)
    assert (length, kind, seq, pid) == (len(add4), 20, 0, 0)            # RTM_NEWADDR
    assert flags == 0x1 | 0x4 | 0x400 | 0x200                           # REQUEST ACK CREATE EXCL
    family, prefixlen, ifa_flags, scope, index = struct.unpack_from("=BBBBI", add4, 16)
    assert (family, prefixlen, ifa_flags, scope, index) == (2, 24, 0, 0, 7)
    # IFA_ADDRESS (1) and IFA_LOCAL (2), both the VIP.
    assert add4[24:].count(bytes([198, 18, 0, 50])) == 2
    del6 = encode_request("del", 7, ipaddress.ip_interface("fd00:198:18::50/64"))
    assert struct.unpack_from("=HH", del6, 4) == (21, 0x1 | 0x4)          # RTM_DELADDR, REQUEST ACK
    assert struct.unpack_from("=BBB", del6, 16) == (10, 64, 0)
    add6 = encode_request("add", 7, ipaddress.ip_interface("fd00:198:18::50/64"))
    assert add6[18] == 0x02                                               # IFA_F_NODAD


def _ack(seq: int, code: int) -> bytes:
    return struct.pack("=IHHII", 36, 2, 0, seq, 0) + struct.pack("=i", -code) + bytes(16)


def test_the_ack_answers_only_its_own_request():
    assert ack_errno(_ack(5, 0), 5) == 0
    assert ack_errno(_ack(5, errno.EEXIST), 5) == errno.EEXIST
    assert ack_errno(_ack(4, errno.EPERM), 5) is None                     # a late answer to an earlier one
    assert ack_errno(_ack(4, 0) + _ack(5, errno.EPERM), 5) == errno.EPERM
    assert ack_errno(b"\x00" * 8, 5) is None
    assert ack_errno(struct.pack("=IHHII", 0, 2, 0, 5, 0), 5) is None     # a zero length never loops


# ---------------------------------------------------------------- the loop's wake-up before a takeover


def test_a_backup_wakes_before_its_master_down_deadline_and_polls_up_to_it(monkeypatch):
    import select as real_select

    from havip.daemon import loop

    waits: list[float] = []

    poll = real_select.select

    def recording_select(r, w, x, timeout):
        waits.append(timeout)
        return poll(r, w, x, 0)                     # nothing to read: as if the time had passed

    monkeypatch.setattr(loop.select, "select", recording_select)
    d, sock, clock = make()
    d.start()
    sock.deliver(_advert(), MASTER)
    d.run_once()
    deadline = d.machine.master_down_deadline
    waits.clear()
    d.run_once()
    # Asked to wake TAKEOVER_SPIN early, not at the deadline (the wake-up's own latency
    # would then come after it).
    assert waits[0] == pytest.approx(deadline - clock() - loop.TAKEOVER_SPIN)
    clock.advance(deadline - clock() - loop.TAKEOVER_SPIN / 2)
    waits.clear()
    d.run_once()
    assert waits and set(waits) == {0}              # polls, never sleeps, this close to it
    assert d.machine.state == State.BACKUP          # and does not take over early
    clock.advance(loop.TAKEOVER_SPIN)
    d.run_once()
    assert d.machine.state == State.MASTER


def test_a_master_sleeps_to_its_advert_deadline(monkeypatch):
    import select as real_select

    from havip.daemon import loop

    waits: list[float] = []
    poll = real_select.select
    monkeypatch.setattr(loop.select, "select", lambda r, w, x, t: (waits.append(t), poll(r, w, x, 0))[1])
    d, sock, clock = make()
    d.start()
    clock.advance(timing.master_down_interval(3, 91, 0.1))
    d.run_once()
    assert d.machine.state == State.MASTER
    waits.clear()
    d.run_once()
    assert waits[0] == pytest.approx(d.machine.adver_deadline - clock())


def test_the_takeover_decided_ahead_is_the_one_applied_at_the_deadline(monkeypatch):
    import select as real_select

    from havip.core import machine as sm
    from havip.daemon import loop

    poll = real_select.select
    monkeypatch.setattr(loop.select, "select", lambda r, w, x, t: poll(r, w, x, 0))
    steps: list[float] = []
    real_step = sm.step
    monkeypatch.setattr(sm, "step", lambda m, p, e, now: (steps.append(now), real_step(m, p, e, now))[1])
    d, sock, clock = make()
    d.start()
    deadline = d.machine.master_down_deadline
    clock.advance(deadline - clock() - loop.TAKEOVER_SPIN / 2)
    d.run_once()
    assert d.machine.state == State.BACKUP          # decided ahead, not applied: not yet due
    assert deadline in steps
    clock.advance(loop.TAKEOVER_SPIN)
    steps.clear()
    d.run_once()
    assert d.machine.state == State.MASTER
    assert d.machine.since == deadline              # the decision taken at the deadline itself
    assert d.executor.counters["adverts_sent"] == 1


def test_an_advert_in_the_last_moments_voids_the_decision_taken_ahead(monkeypatch):
    import select as real_select

    from havip.daemon import loop

    poll = real_select.select
    monkeypatch.setattr(loop.select, "select", lambda r, w, x, t: poll(r, w, x, 0))
    d, sock, clock = make()
    d.start()
    deadline = d.machine.master_down_deadline
    clock.advance(deadline - clock() - loop.TAKEOVER_SPIN / 2)
    sock.deliver(_advert(), MASTER)                 # arrives while the loop polls to the deadline
    d.run_once()
    clock.advance(loop.TAKEOVER_SPIN)
    d.run_once()
    assert d.machine.state == State.BACKUP
    assert d.machine.master is not None and d.machine.master.address == MASTER


def test_the_rehearsal_before_a_takeover_sends_nothing(monkeypatch):
    import select as real_select

    from havip.daemon import loop

    poll = real_select.select
    monkeypatch.setattr(loop.select, "select", lambda r, w, x, t: poll(r, w, x, 0))
    order: list = []

    class PreparingAnnouncer(OrderedAnnouncer):
        def prepare(self, vips) -> None:
            order.append("prepare")

    d, sock, clock = make(announcer=PreparingAnnouncer(order))
    d.start()
    order.clear()                                   # the warm-up when the socket opened
    sock.sent.clear()
    deadline = d.machine.master_down_deadline
    clock.advance(deadline - clock() - loop.TAKEOVER_SPIN / 2)
    d.run_once()
    assert order == ["prepare"]                     # rehearsed: frames looked up, none sent
    assert sock.sent == [] and d.ad.vips.calls == ["remove"] and not d.ad.vips.attached
    assert d.machine.state == State.BACKUP
