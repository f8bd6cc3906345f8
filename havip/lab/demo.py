"""`havip lab demo`: a client writes through the VIP while the master's Milvus is killed.

It prints havip's own reason sentences from both hosts as they are logged, checks that
the client carries on against the backup with every acknowledged row, shows that the
failed host holds back instead of snatching Milvus back, moves it back with `havipctl
failover`, and ends with the failover's timeline and the Sampler's verdict.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from havip.lab.client import Client
from havip.lab.milvuslab import HAVIP_HOSTS, VIP, failover_timeline, log_time
from havip.lab.netns import wait_for
from havip.lab.sampler import Sampler

Echo = Callable[[str], None]


class _Follower:
    """Print each transition and decision of both hosts logged after wall time `t0`."""

    def __init__(self, lab, t0: float, echo: Echo):
        self.lab, self.t0, self.echo = lab, t0, echo
        self.printed = 0

    def poll(self) -> None:
        shown = [e for e in self.lab.events() if e.get("event") in ("transition", "decision")
                 and log_time(e["timestamp"]) >= self.t0]
        for e in shown[self.printed:]:
            what = f"{e['from']} -> {e['to']}: " if e["event"] == "transition" else ""
            self.echo(f"  +{log_time(e['timestamp']) - self.t0:5.2f}s  {e['host']}  {what}{e['reason']}")
        self.printed = max(self.printed, len(shown))

    def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        def done() -> bool:
            self.poll()
            return predicate()
        wait_for(done, timeout, interval=0.1, what=what)


def run_demo(lab, echo: Echo) -> None:
    master = lab.wait_serving(None, 60)
    backup = next(n for n in HAVIP_HOSTS if n != master)
    echo(f"\n{master} is master: it holds the VIP {VIP} and runs Milvus. {backup} is backup: its Milvus "
         f"is stopped, because both would write the same shared storage.")
    client = lab.client(collection=f"demo_{int(time.time())}")
    sampler = Sampler(lab)
    sampler.start()
    try:
        client.create()
        for _ in range(5):
            client.insert(100)
        echo(f"\nClient in {lab.hosts['client'].ns}, talking to {VIP}:19530: created a collection, inserted "
             f"500 rows in 5 batches (each acknowledged after insert + flush); search -> ids {client.search()}, "
             f"count {client.count()}.")
        # The real server's flush takes seconds: in the background a batch is acknowledged
        # when its insert returns (Milvus has written it to its log), as most clients do.
        flush = lab.milvus != "standalone"
        echo(f"It now writes 10 rows every 0.2 s in the background (acknowledged after insert"
             f"{' + flush' if flush else ', no flush'}), and a Docker sampler checks both hosts "
             "every 50 ms that at most one Milvus runs.")
        client.traffic_start(batch=10, period=0.2, flush=flush)
        time.sleep(1)

        echo(f"\nFault: docker kill of the Milvus container on {master}. havip says:")
        t0 = time.time()
        api = lab.api(master)
        api.kill("milvus")
        api.close()
        follow = _Follower(lab, t0, echo)
        follow.until(lambda: lab.serving(backup) and lab.vip_holders() == [backup], 60,
                     f"{backup} to serve Milvus on the VIP")
        reached = client.wait_reachable(30)
        reached = Client.recovered_at(client.traffic_sync(), t0) or reached   # the writer saw it first
        echo(f"  +{reached - t0:5.2f}s  client: first successful insert and search through the VIP")
        hits, count, missing = client.search(), client.count(), client.missing()
        verdict = f"all {len(client.acked)} acknowledged rows are there" if not missing else \
            f"{len(missing)} acknowledged rows are MISSING: {missing[:10]}"
        echo(f"\nClient, now served by {backup}: search -> ids {hits}, count {count}; {verdict}.")

        follow.until(lambda: lab.havipds[master].state() == "backup", 30, f"{master} to be backup again")
        time.sleep(4)
        follow.poll()
        echo(f"\n{master}'s standby checks pass again, but it does not take Milvus back by itself: a host "
             f"whose Milvus just failed holds back ({backup} has served for 4 s more), so a crash-looping "
             f"Milvus cannot bounce between the hosts. The operator moves it back: havipctl failover on "
             f"{master} ({backup} stops its Milvus before {master} starts its own):")
        sock = lab.havipds[master].config["control"]["socket"]
        res = subprocess.run([sys.executable, "-m", "havip.ctl", "-s", sock, "failover"], capture_output=True,
                             text=True, timeout=150)
        follow.poll()
        for line in (res.stdout + res.stderr).strip().splitlines():
            echo(f"  havipctl: {line}")
        if res.returncode != 0:
            raise RuntimeError(f"havipctl failover on {master} failed with status {res.returncode}")
        follow.until(lambda: lab.serving(master) and lab.vip_holders() == [master], 60,
                     f"{master} to serve Milvus again")
        client.wait_reachable(30)
        report = client.traffic_stop()
        missing = client.missing()
    finally:
        sampler.stop()
        client.close()

    t = failover_timeline(lab.events(), t0, backup, reached)
    echo("\nFailover timeline, seconds after the kill:")
    steps = [(t["detection"], f"failure detected by {t['detected_by']}"), (t["vip_moved"], f"VIP on {backup}"),
             (t["container_started"], f"Milvus container started on {backup}"),
             (t["milvus_ready"], f"Milvus on {backup} healthy"),
             (t["client_ok"], "first client success through the VIP")]
    for value, label in sorted(steps, key=lambda s: float("inf") if s[0] is None else s[0]):
        echo(f"  {'    -' if value is None else f'{value:5.2f}'}  {label}")
    ok_batches = report["ops"] - report["failures"]
    echo(f"\nClient: {ok_batches} background batches acknowledged; while Milvus was unreachable it retried "
         f"every 50 ms ({report['failures']} failed attempts over the two handovers); "
         f"{'no acknowledged row lost' if not missing else f'{len(missing)} acknowledged rows LOST'}.")
    echo(f"Sampler: {sampler.summary()}.")
    if missing or sampler.overlaps:
        raise RuntimeError("the demo found a problem: see above")
