"""Review of the takeover path (merge of vipms): whatever reaches the machine while a backup
polls to its master-down deadline voids the decision it took ahead. Each case injects the
change from inside the poll (a fake select()) and moves the fake clock past the deadline,
so the turn that polled is the turn that decides; the assertion is what the ordinary path
(a fresh Tick) would decide. Fake clock, no timed assertions."""

from __future__ import annotations

import select as real_select

import pytest

from havip import config
from havip.daemon import loop
from havip.model import HealthChanged, PauseChanged, State
from havip.protocol import codec
from tests.unit.test_takeover_path import MASTER, V3, _advert, make


def _poll_with(monkeypatch, d, clock, inject):
    """select() that, on its first call this close to the deadline, runs `inject` and lets
    the deadline pass (the change lands inside the polling window)."""
    poll, fired = real_select.select, []
    deadline = d.machine.master_down_deadline

    def fake(r, w, x, _t):
        if not fired and deadline - clock() <= loop.TAKEOVER_SPIN:
            fired.append(True)
            inject()
            clock.advance(deadline - clock() + 1e-6)
        return poll(r, w, x, 0)

    monkeypatch.setattr(loop.select, "select", fake)
    clock.advance(deadline - clock() - loop.TAKEOVER_SPIN / 2)
    d.run_once()
    assert fired, "the change did not land inside the polling window"


def _started():
    d, sock, clock = make()
    d.start()
    assert d.machine.state == State.BACKUP and d.machine.master_down_deadline is not None
    return d, sock, clock


def test_a_pause_posted_while_polling_keeps_the_backup_backup(monkeypatch):
    d, _sock, clock = _started()
    _poll_with(monkeypatch, d, clock, lambda: d.post(PauseChanged(True)))
    assert d.machine.paused and d.machine.state == State.BACKUP
    assert d.ad.vips.calls == ["remove"] and not d.ad.vips.attached


def test_a_pause_through_a_control_call_while_polling_keeps_the_backup_backup(monkeypatch):
    d, _sock, clock = _started()
    _poll_with(monkeypatch, d, clock, lambda: d.call(lambda: d.feed(PauseChanged(True))))
    assert d.machine.paused and d.machine.state == State.BACKUP and not d.ad.vips.attached


def test_a_failed_backup_check_posted_while_polling_is_a_fault_not_a_takeover(monkeypatch):
    d, _sock, clock = _started()
    _poll_with(monkeypatch, d, clock,
               lambda: d.post(HealthChanged(healthy=False, reason="data path gone", role="backup")))
    assert d.machine.state == State.FAULT and not d.ad.vips.attached


def test_a_reload_while_polling_takes_over_with_the_new_priority_not_the_one_decided_ahead(monkeypatch):
    d, sock, clock = _started()
    sock.sent.clear()
    new = config.parse({**V3, "priority": 97}, default_instance="test")
    _poll_with(monkeypatch, d, clock, lambda: d.call(lambda: d.apply_config(new)))
    # Not the takeover decided ahead (priority 91, at the old deadline): the reload's own
    # decision, which re-arms a backup's master-down timer; the takeover comes at the new one.
    assert d.machine.state == State.BACKUP and not d.ad.vips.attached and sock.sent == []
    clock.advance(d.machine.master_down_deadline - clock())
    d.run_once()
    assert d.machine.state == State.MASTER
    sent = [codec.decode(p, src="198.18.0.21", dst=dst, ttl=255, family=4).priority for p, dst in sock.sent]
    assert sent and set(sent) == {97}


def test_a_higher_advert_while_polling_keeps_the_backup_backup(monkeypatch):
    d, sock, clock = _started()
    _poll_with(monkeypatch, d, clock, lambda: sock.deliver(_advert(110), MASTER))
    assert d.machine.state == State.BACKUP and not d.ad.vips.attached


def test_a_shutdown_while_polling_ends_stopped_with_no_vip(monkeypatch):
    d, _sock, clock = _started()
    _poll_with(monkeypatch, d, clock, d.request_stop)
    for _ in range(20):
        if d.machine.state == State.STOPPED:
            break
        clock.advance(0.01)
        d.run_once()
    assert d.machine.state == State.STOPPED and not d.ad.vips.attached


@pytest.mark.parametrize("stamp_offset", [-3600.0, 3600.0])
def test_a_stamp_an_hour_off_moves_the_timer_by_at_most_max_receipt_age(stamp_offset):
    d, sock, clock = _started()
    from havip.protocol import timing

    md = timing.master_down_interval(3, 91, 0.1)
    sock.deliver(_advert(), MASTER, stamp=d.wall() + stamp_offset)
    d.run_once()
    got = d.machine.master_down_deadline - clock()
    assert md - min(loop.MAX_RECEIPT_AGE, 0.01) - 1e-9 <= got <= md + 1e-9
