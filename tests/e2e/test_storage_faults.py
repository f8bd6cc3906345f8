"""End to end: the shared storage fails under the master only (issue 10's fault matrix),
with real dockerd, real milvus-lite and two havip hosts.

The lab is built with `storage="per-host"` (havip.lab.storage): each host's havip,
dockerd and containers see the shared directory through a FUSE view in a mount namespace
of their own, and the fault is switched on h1's view alone:
- unwritable: every write fails with EROFS (a read-only remount);
- hung: the view's FUSE server is stopped (SIGSTOP): every access blocks (a hung NFS).

What must happen: h1 (the master) is fenced (VIP removed, Milvus stopped) without
waiting for `fall`; h2 takes over only once the lease is free (unwritable: h1 could not
mark it released, so h2 waits `orphan_timeout`; hung: h1's lock stays held until the
storage answers again); the Sampler never sees two Milvus running. The time from the
fault to the fence is logged (the figure with its target: docs/benchmarks-fence.md,
measured by bench/fence.py; here the bound asserted is a generous one).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time

import pytest

from havip.lab.milvuslab import HAVIP_HOSTS, MilvusLab, log_time
from havip.lab.sampler import Sampler
from havip.lab.netns import wait_for
from tests.conftest import require_binary, require_fuse, require_root

pytestmark = [pytest.mark.root, pytest.mark.docker]

ORPHAN_TIMEOUT = 6     # h2's wait for a lease record h1 could not mark released
BOUND = 5.0            # generous: the target is check_interval (0.5 s) + 1 s, plus the kill


@pytest.fixture
def lab():
    require_root()
    require_binary("dockerd")
    require_binary("unshare")
    require_fuse()
    workdir = tempfile.mkdtemp(prefix="hvs", dir="/tmp")     # short: containerd's socket paths
    lab = MilvusLab(f"{workdir}/lab", prefix="hvs" + secrets.token_hex(2), storage="per-host")
    try:
        lab.build()
        for name in HAVIP_HOSTS:
            lab.havipds[name].config["milvus"]["lease"]["orphan_timeout"] = ORPHAN_TIMEOUT
        lab.start_havip("h1")
        lab.start_havip("h2")
        lab.wait_serving("h1", 90)
        lab.havipds["h2"].wait_state("backup", 60)
        yield lab
    finally:
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


def fenced(lab: MilvusLab, sampler: Sampler, fault_at: float, timeout: float = 30) -> dict:
    """Wait until h1 dropped the VIP and its Milvus stopped; the seconds from the fault."""
    vip_gone = wait_for(lambda: "h1" not in lab.vip_holders() and time.time(), timeout, interval=0.01,
                        what="h1 to drop the VIP")

    def stopped():
        changes = [t for t, running in sampler.changes_since(fault_at)["h1"] if not running]
        return changes[0] if changes else None
    killed = wait_for(stopped, timeout, interval=0.05, what="h1's Milvus to stop")
    return {"vip": round(vip_gone - fault_at, 3), "stopped": round(killed - fault_at, 3)}


def account(lab: MilvusLab, host: str, after: float) -> str:
    """What `host` said after wall time `after` (for failure messages)."""
    return "\n".join(f"{log_time(e['timestamp']) - after:+.2f} {e.get('event')}: {e.get('reason', '')}"
                     for e in lab.havipds[host].events()
                     if "timestamp" in e and log_time(e["timestamp"]) >= after and e.get("event") != "advert")


def fence_said(lab: MilvusLab, after: float) -> str:
    return next((str(e.get("reason")) for e in lab.havipds["h1"].events()
                 if "fencing" in str(e.get("reason", "")) and log_time(e.get("timestamp", "1970-01-01T00:00:00Z"))
                 >= after - 1), "")


def first_start(sampler: Sampler, host: str, after: float) -> float | None:
    return next((t for t, running in sampler.changes_since(after)[host] if running), None)


def test_storage_unwritable_on_the_master_fences_it_and_the_backup_waits_for_the_lease(lab):
    sampler = Sampler(lab)
    sampler.start()
    try:
        wait_for(lambda: sampler.sample() == {"h1": True, "h2": False}, 10, what="h1 alone to run Milvus")
        fault_at = lab.storages["h1"].unwritable("erofs")
        took = fenced(lab, sampler, fault_at)
        print(f"storage unwritable on the master: fenced in {took} s from the fault")
        assert took["vip"] <= BOUND and took["stopped"] <= BOUND, took
        said = fence_said(lab, fault_at)
        assert "lease check failed" in said and "Read-only file system" in said, said
        lab.wait_serving("h2", 60)
        h2_at = first_start(sampler, "h2", fault_at)
        assert h2_at is not None and h2_at >= fault_at + took["stopped"]
        taken = next(str(e.get("reason")) for e in lab.havipds["h2"].events() if "acquired" in str(e.get("reason", "")))
        assert "taken from lab-h1, which never released it" in taken, taken
        assert h2_at - fault_at >= ORPHAN_TIMEOUT - 1, "h2 took a lease h1 could not give back before the wait"
        assert lab.havipds["h1"].state() == "fault"
    finally:
        sampler.stop()
    assert sampler.overlaps == [], sampler.summary()


def test_storage_hung_on_the_master_fences_it_and_the_backup_waits_until_it_answers(lab):
    """The VIP goes and the kill is asked at the fence, but Milvus, blocked in I/O on the
    hung view, cannot die: its main thread is a zombie and one thread waits in the kernel
    for a write the storage took (Docker gives up its SIGKILL after ~12 s, "zombie", and
    reports the container exited after ~22 s). h1's lock stays held while its storage
    hangs, so h2 waits: an outage, never two writers; the test thaws after 5 s."""
    sampler = Sampler(lab)
    sampler.start()
    st = lab.storages["h1"]
    try:
        wait_for(lambda: sampler.sample() == {"h1": True, "h2": False}, 10, what="h1 alone to run Milvus")
        fault_at = st.freeze()
        vip_gone = wait_for(lambda: "h1" not in lab.vip_holders() and time.time(), 30, interval=0.01,
                            what="h1 to drop the VIP")
        said = wait_for(lambda: fence_said(lab, fault_at), 30, what="h1 to fence")
        fence_at = next(log_time(e["timestamp"]) for e in lab.havipds["h1"].events()
                        if e.get("event") == "fence" and log_time(e["timestamp"]) >= fault_at - 1)
        took = {"fence": round(fence_at - fault_at, 3), "vip": round(vip_gone - fault_at, 3)}
        print(f"storage hung on the master: {took} s from the fault")
        assert took["fence"] <= BOUND and took["vip"] <= BOUND, (took, account(lab, "h1", fault_at))
        assert "lease check failed" in said and "did not finish within" in said, said
        # h1's lock is held while its storage hangs: h2 must not start a Milvus.
        end = time.time() + 5
        while time.time() < end:
            assert sampler.sample()["h2"] is not True, account(lab, "h2", fault_at)   # None: no answer
            time.sleep(0.1)
        assert "h2" not in lab.vip_holders()
        thawed_at = time.time()
        st.thaw()
        lab.wait_serving("h2", 60)
        h1_stop = next(t for t, running in sampler.changes_since(fault_at)["h1"] if not running)
        h2_at = first_start(sampler, "h2", fault_at)
        print(f"h1's Milvus stopped {h1_stop - fault_at:.2f} s after the fault (thawed at "
              f"{thawed_at - fault_at:.2f} s), h2's started at {h2_at - fault_at:.2f} s")
        assert h2_at is not None and h2_at >= thawed_at and h2_at >= h1_stop
    finally:
        st.thaw()
        sampler.stop()
    assert sampler.overlaps == [], sampler.summary()
