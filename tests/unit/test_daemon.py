"""The daemon loop and executor over fake adapters: what reaches the adapters, in which
order, and what happens when they fail. No root, no network."""

from __future__ import annotations

import time

import pytest
import structlog

from havip import config
from havip.daemon.loop import Adapters, Daemon
from havip.model import Advert, Shutdown, State
from havip.protocol import codec
from tests.fakes import FakeAnnouncer, FakeClock, FakeLink, FakeRuntime, FakeSocket, FakeVips, fail

BASE = {"interface": "eth0", "virtual_router_id": 51, "priority": 110, "advert_interval": 1,
        "authentication": {"type": "pass", "password": "1111"}, "virtual_ipaddresses": ["198.18.0.50/24"]}


def make(milvus: bool = False, config_path: str | None = None, load_config=config.load, **over):
    data = {**BASE, **over}
    if milvus:
        data["milvus"] = {"container": "milvus", "start_timeout": 5, "stop_timeout": 1}
    cfg = config.parse(data, default_instance="test")
    sock, vips, link, clock = FakeSocket(), FakeVips(), FakeLink(), FakeClock()
    runtime = FakeRuntime(running=True) if milvus else None
    ad = Adapters(make_socket=lambda: sock, vips=vips, announcer=FakeAnnouncer(), link=link,
                  runtime=runtime, milvus_probe=object() if milvus else None)
    d = Daemon(cfg, ad, log=structlog.get_logger("test"), clock=clock, config_path=config_path,
               load_config=load_config)
    return d, sock, vips, link, clock, runtime


def _priorities(sock: FakeSocket) -> list[int]:
    out = []
    for payload, _dst in sock.sent:
        adv = codec.decode(payload, src=sock.source, dst="224.0.0.18", ttl=255, family=4)
        assert isinstance(adv, Advert)
        out.append(adv.priority)
    return out


def _settle(d: Daemon, deadline: float = 3.0) -> None:
    """Let worker threads report back and the loop process their events. A job the worker
    is running is not in its queue any more: wait on busy(), queued *or* running."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        d.run_once()
        if not d.executor.busy() and not d._events:
            d.run_once()
            return


def run_until(d, cond, timeout: float) -> bool:
    """Turn the real loop (real threads, real time) until `cond()` holds or `timeout` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        d.run_once()
        if cond():
            return True
        time.sleep(0.01)
    return False


def _become_master(d, clock) -> None:
    """Start, let master-down and the settle window pass: the machine opens its gate."""
    d.start()
    _settle(d)
    clock.advance(3.7)
    d.run_once()
    clock.advance(1.0)
    _settle(d)


def test_start_as_backup_removes_stale_vip_and_stops_stale_container():
    d, sock, vips, link, clock, rt = make(milvus=True)
    d.start()
    _settle(d)
    assert d.machine.state == State.BACKUP
    assert vips.calls == ["remove"]
    assert rt.calls == ["stop"] and rt.running is False
    assert sock.sent == []


def test_takeover_sends_advert_adds_vip_and_starts_milvus():
    d, sock, vips, link, clock, rt = make(milvus=True)
    d.start()
    _settle(d)
    clock.advance(3.7)
    d.run_once()
    assert d.machine.state == State.MASTER
    assert _priorities(sock) == [110]
    assert not vips.attached and "start" not in rt.calls   # nobody heard since start: settle first
    clock.advance(1.0)
    _settle(d)
    assert vips.attached
    assert rt.running and "start" in rt.calls
    assert str(d.machine.container) == "running"
    assert d.status()["container"] == "running"


def test_advert_send_failure_is_counted_not_fatal():
    d, sock, vips, link, clock, rt = make()
    d.start()
    sock.send_error = fail("sendmsg: Network is unreachable")
    clock.advance(3.7)
    d.run_once()
    assert d.machine.state == State.MASTER
    assert d.executor.counters["error_SendAdvert"] == 1
    assert "unreachable" in d.executor.last_error
    sock.send_error = None
    clock.advance(1.0)
    d.run_once()
    assert _priorities(sock) == [110]


def test_vip_failure_is_counted_and_the_loop_goes_on():
    d, sock, vips, link, clock, rt = make()
    vips.error = fail("cannot add 198.18.0.50/24 to eth0: Operation not permitted")
    d.start()
    clock.advance(3.7)
    d.run_once()
    assert d.machine.state == State.MASTER
    assert d.executor.counters["error_AddVip"] == 1
    assert d.executor.counters["error_DelVip"] == 1


def test_garbage_from_the_wire_is_counted_by_reason():
    d, sock, vips, link, clock, rt = make()
    d.start()
    good = codec.encode(Advert(2, 51, 200, 1.0, ("198.18.0.50",), auth_type=1, password=b"1111"),
                        src="198.18.0.21", dst="224.0.0.18")
    sock.deliver(b"\x00\x01", "198.18.0.21")
    sock.deliver(good, "198.18.0.21", ttl=64)
    sock.deliver(good[:-1] + bytes([good[-1] ^ 1]), "198.18.0.21")
    sock.deliver(good, "198.18.0.21")
    d.run_once()
    assert d.drops["truncated"] == 1
    assert d.drops["bad_ttl"] == 1
    assert d.drops["auth_mismatch"] + d.drops["bad_checksum"] == 1
    assert d.machine.master is not None and d.machine.master.priority == 200


def test_link_down_goes_to_fault_and_closes_the_socket():
    d, sock, vips, link, clock, rt = make()
    d.start()
    clock.advance(3.7)
    d.run_once()
    assert d.machine.state == State.MASTER
    link.set(False)
    d.run_once()
    assert d.machine.state == State.FAULT
    assert sock.closed and not vips.attached
    assert "went down" in d.machine.reason


def test_a_container_that_will_not_stop_blocks_the_handover():
    d, sock, vips, link, clock, rt = make(milvus=True)
    _become_master(d, clock)
    assert str(d.machine.container) == "running"
    rt.stop_error = fail("cannot stop container milvus: Docker engine is unreachable")
    d.request_stop()
    _settle(d)
    assert d.machine.state == State.MASTER          # still advertising: no second writer
    assert 0 not in _priorities(sock)
    rt.stop_error = None
    clock.advance(1.1)                              # STOP_RETRY
    _settle(d)
    assert d.machine.state == State.STOPPED
    assert _priorities(sock)[-1] == 0


def test_status_has_the_fields_operators_read():
    d, *_ = make(milvus=True)
    d.start()
    st = d.status()
    for key in ("instance", "state", "since_seconds", "reason", "priority", "vips", "vip_attached", "master",
                "container", "checks", "transitions", "drops", "paused"):
        assert key in st
    assert st["instance"] == "test" and st["state"] == "backup"


@pytest.fixture(autouse=True)
def _quiet_logs():
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    yield
    structlog.reset_defaults()


def test_notify_hooks_run_with_arguments_time_out_and_never_block(tmp_path):
    out = tmp_path / "calls"
    ok = tmp_path / "ok.sh"
    ok.write_text(f"#!/bin/sh\necho \"$@\" >> {out}\n")
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    for f in (ok, slow):
        f.chmod(0o755)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))   # warnings too
    d, sock, vips, link, clock, rt = make(notify={"backup": str(ok), "master": str(slow), "timeout": 0.3})
    with structlog.testing.capture_logs() as logs:
        d.start()
        clock.advance(3.7)
        t0 = time.monotonic()
        d.run_once()
        assert time.monotonic() - t0 < 0.25, "a hook must not block the loop"
        assert d.machine.state == State.MASTER
        wait = time.monotonic() + 5
        while time.monotonic() < wait and not any(e["event"] == "hook_timeout" for e in logs):
            time.sleep(0.05)
    assert out.read_text().split() == ["backup", "110", "test"]
    timeout = next(e for e in logs if e["event"] == "hook_timeout")
    assert timeout["argv"] == [str(slow), "master", "110", "test"] and timeout["timeout"] == 0.3


# ---------------------------------------------------------------- storage lease (real file, real flock)


def _with_lease(tmp_path, holder: str = "h2"):
    from havip.runtime.lease import StorageLease

    d, sock, vips, link, clock, rt = make(milvus=True)
    d.ad.lease = d.executor.lease = StorageLease(str(tmp_path / ".havip-lease"), holder)
    d.params = d._params("")
    return d, sock, vips, clock, rt


def test_lease_taken_before_the_vip_and_milvus_and_given_back_after_the_stop(tmp_path):
    from havip.runtime.lease import StorageLease

    d, sock, vips, clock, rt = _with_lease(tmp_path)
    _become_master(d, clock)
    assert d.machine.state == State.MASTER and vips.attached and rt.running
    st = d.status()["lease"]
    assert st["held_here"] is True and st["holder"] == "h2" and st["state"] == "held"
    assert not StorageLease(st["path"], "h1").acquire().ok
    d.request_stop()
    for _ in range(20):
        d.run_once()
        _settle(d, 0.2)
        if d.machine.state == State.STOPPED:
            break
    assert d.machine.state == State.STOPPED and not rt.running
    assert d.status()["lease"]["state"] == "released"
    assert StorageLease(st["path"], "h1").acquire().ok


def test_lease_held_elsewhere_means_master_without_vip_or_milvus(tmp_path):
    from havip.runtime.lease import StorageLease

    other = StorageLease(str(tmp_path / ".havip-lease"), "h1")
    assert other.acquire().ok                   # h1, across a split brain, serves
    d, sock, vips, clock, rt = _with_lease(tmp_path)
    _become_master(d, clock)
    for _ in range(3):
        clock.advance(0.3)
        _settle(d)
    assert d.machine.state == State.MASTER and str(d.machine.container) == "leasing"
    assert not vips.attached and "start" not in rt.calls
    assert d.machine.lease_holder == "h1"
    other.release()                             # h1's Milvus stopped: the lease is free
    clock.advance(0.3)
    _settle(d)
    _settle(d)
    assert vips.attached and rt.running and str(d.machine.container) == "running"
    d.close()


def test_a_hung_storage_does_not_hold_the_handover_up(tmp_path):
    """The lease release blocks (an NFS server that does not answer): the container is
    stopped, so the handover goes on after the bounded wait, and says so."""
    import threading

    class HungLease:
        path, held = "/nfs/.havip-lease", True

        def __init__(self):
            self.gate = threading.Event()

        def acquire(self):
            from havip.runtime.lease import LeaseResult
            return LeaseResult(True, "acquired")

        def release(self):
            self.gate.wait(10)

        def status(self):
            return {"path": self.path, "held_here": True}

    d, sock, vips, link, clock, rt = make(milvus=True)
    lease = HungLease()
    d.ad.lease = d.executor.lease = lease
    d.executor.cfg = d.cfg.model_copy(update={"milvus": d.cfg.milvus.model_copy(update={"check_timeout": 0.2})})
    t0 = time.monotonic()
    d.executor._release_lease_bounded()      # the machine's ReleaseLease, on the worker
    took = time.monotonic() - t0
    assert 1.1 <= took < 3, took
    assert d.executor.counters["error_ReleaseLease"] == 1
    lease.gate.set()


def test_a_reload_reads_the_file_off_the_loop_thread(tmp_path):
    # SIGHUP ran config.load on the loop thread: a 1 MiB file took PyYAML ~9 s there (64 KiB
    # 0.6 s), with no advert sent meanwhile. Here the read blocks until the test lets it go.
    import threading

    import yaml

    reading, release, reads = threading.Event(), threading.Event(), []

    def slow_load(path):
        reads.append(threading.current_thread().name)
        reading.set()
        assert release.wait(10)
        return config.load(path)

    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump({**BASE, "priority": 120}))
    d, sock, *_ = make(config_path=str(path), load_config=slow_load)
    d.start()
    d.request_reload()
    d.run_once()
    assert reading.wait(2) and reads == ["havip-reload"]
    d.request_reload()                          # a second SIGHUP while the first is reading
    for _ in range(3):
        d.run_once()                            # the loop goes on: it is not the one reading
    assert d.cfg.priority == 110 and d.reloading and len(reads) == 1
    release.set()
    deadline = time.monotonic() + 5
    while (len(reads) < 2 or d.reloading) and time.monotonic() < deadline:
        d.run_once()
    assert d.cfg.priority == 120 and not d.reloading
    assert reads == ["havip-reload", "havip-reload"]          # the second SIGHUP, once, after the first
    path.write_text("priority: 0\n")
    d.request_reload()
    deadline = time.monotonic() + 5
    d.run_once()
    while d.reloading and time.monotonic() < deadline:
        d.run_once()
    assert d.cfg.priority == 120 and not d.reloading          # an invalid file keeps the running config


def test_a_request_in_flight_at_shutdown_writes_nowhere():
    # A control request, a reload or a switchover watcher still running when the daemon
    # closed wrote to the closed wake pipe: EBADF (a traceback in a control worker), or,
    # once the descriptor numbers were reused, a stray byte into someone else's pipe.
    import os

    d, *_ = make()
    d.start()
    d.run_once()
    d.close()
    r, w = os.pipe()                    # most likely the wake pipe's numbers, reused
    try:
        os.set_blocking(r, False)
        fut = d.call(lambda: 1)
        d.post(Shutdown())
        d.request_stop()
        assert not fut.done()
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
    finally:
        os.close(r)
        os.close(w)


def test_a_loop_that_stood_still_says_so():
    """SIGSTOP / a paused VM: the first turn after it logs how long no advert went out."""
    d, sock, vips, link, clock, rt = make()
    d.start()
    d.run_once()
    assert d.stalls == 0
    clock.advance(20.0)
    d.run_once()
    assert d.stalls == 1
    d.close()
