"""Packet loss on the lab's bridge, and what VRRP should make of it (issue 10, fault matrix).

The kernel here has no sch_netem (`tc qdisc add ... netem` answers "Specified qdisc kind is
unknown"), so the loss is an nftables rule in the switch namespace's bridge `forward` hook:
`numgen random mod 100 < P drop`. The bridge runs that hook once per output port, so every
receiver loses each frame independently with probability P, as netem on each switch port's
egress would. Nothing outside the switch namespace is touched.

The expectation is counted, not guessed: a backup takes over when it hears no advert for
`master_down = 3 x interval + skew` (RFC 3768 6.1 / RFC 5798 6.1); with the skew below one
interval that is exactly 3 adverts lost in a row. `expected()` gives the chance of that,
and `gaps()` counts the runs of lost adverts that really happened at the backup (from a
sniffer there), so a test can tell a takeover the protocol demands from a spurious one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TABLE = "havip_loss"


class BridgeLoss:
    """Random loss on every bridge port of a Topology's switch (nftables, bridge family)."""

    def __init__(self, topology):
        self.topo = topology
        self.on = False

    def start(self, percent: int) -> None:
        if not 0 < percent < 100:
            raise ValueError("percent must be between 1 and 99")
        rules = (f"table bridge {TABLE} {{\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n"
                 f"  counter\n  numgen random mod 100 < {percent} counter drop\n }}\n}}\n")
        self._nft_file(rules)
        self.on = True
        self.topo.on_close(self.stop)

    def _nft_file(self, rules: str) -> None:
        from havip.lab.netns import ns_exec_argv

        subprocess.run(ns_exec_argv(self.topo.switch, ["nft", "-f", "-"]), input=rules, text=True, check=True,
                       capture_output=True, timeout=30)

    def counters(self) -> tuple[int, int]:
        """(frames forwarded or dropped, frames dropped) since start()."""
        out = self.topo.sw("nft", "-j", "list", "table", "bridge", TABLE).stdout
        packets = [e["counter"]["packets"] for item in json.loads(out)["nftables"] if "rule" in item
                   for e in item["rule"]["expr"] if "counter" in e]
        return packets[0], packets[1]

    def stop(self) -> None:
        if self.on:
            self.on = False
            self.topo.sw("nft", "delete", "table", "bridge", TABLE)


# ------------------------------------------------------------------ the arithmetic


def master_down(version: int, interval: float, priority: int) -> float:
    """RFC 3768 6.1 (v2: skew in seconds) and RFC 5798 6.1 (v3: skew scaled by the interval)."""
    skew = (256 - priority) / 256 * (interval if version == 3 else 1.0)
    return 3 * interval + skew


def lost_in_a_row_to_take_over(version: int, interval: float, priority: int) -> int:
    """Adverts a backup must miss in a row before its master-down timer fires."""
    k = 1
    while (k + 1) * interval <= master_down(version, interval, priority):
        k += 1
    return k


@dataclass(frozen=True)
class Expected:
    adverts: int            # adverts sent during the window
    run: int                # consecutive losses that make the backup take over
    p_any: float            # chance of at least one takeover in the window
    mean: float             # expected number of takeovers (runs of >= `run` losses)


def expected(loss: float, adverts: int, run: int = 3) -> Expected:
    """Independent loss `loss` per advert: the chance that `adverts` in a row contain a run of
    at least `run` losses (dynamic programming over the current run length), and the mean
    number of such runs: a run starts at the first advert or after a received one."""
    state = [1.0] + [0.0] * (run - 1)           # P(current run length = i, no long run yet)
    for _ in range(adverts):
        nxt = [0.0] * run
        nxt[0] = sum(state) * (1 - loss)
        for i in range(run - 1):
            nxt[i + 1] = state[i] * loss
        state = nxt
    p_any = 1 - sum(state)
    mean = loss ** run + max(0, adverts - run) * (1 - loss) * loss ** run if adverts >= run else 0.0
    return Expected(adverts, run, p_any, mean)


def gaps(arrivals: list[float], interval: float) -> list[int]:
    """Adverts missed between consecutive arrivals (one entry per gap)."""
    return [max(0, round((b - a) / interval) - 1) for a, b in zip(arrivals, arrivals[1:])]


# ------------------------------------------------------------------ the experiment

H1, H2 = 110, 91
VIP = "198.18.0.50"


def measure(topology, workdir: Path, *, version: int, interval: float, seconds: float, percent: int = 30) -> dict:
    """A havip pair (priorities 110 and 91, loop threads at SCHED_RR 10) on the topology's
    bridge, `percent` % loss for `seconds`; what the backup heard and what both did."""
    from havip.lab.havipd import Havipd, holders, vrrp_config
    from havip.lab.netns import wait_for

    h1 = topology.add_host("h1", 11)
    h2 = topology.add_host("h2", 21)
    cfg = {"version": version, "interval": interval, "vips": [f"{VIP}/24"], "realtime_priority": 10}
    d1 = Havipd(h1, vrrp_config(priority=H1, **cfg), workdir)
    d2 = Havipd(h2, vrrp_config(priority=H2, **cfg), workdir)
    loss = BridgeLoss(topology)
    try:
        d1.start()
        d2.start()
        d1.wait_state("master", timeout=30)
        d2.wait_state("backup", timeout=30)
        wait_for(lambda: holders([h1, h2], VIP) == ["h1"], 10, what="the VIP on h1")
        n1, n2 = len(d1.transitions()), len(d2.transitions())
        down = master_down(version, interval, H2)
        tail = down + 5 * interval + 1      # after the loss: the backup hears the master again
        # The sniffer at real-time priority too: its timestamps tell a run of 2 lost adverts
        # (0.3 s at 0.1 s) from a run of 3 (0.4 s).
        sniff = h2.popen(["chrt", "-r", "10", sys.executable, "-m", "havip.lab.sniff", "eth0", str(seconds + tail + 1)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if sniff.stderr.readline().strip() != "listening":
            raise RuntimeError(f"the sniffer on h2 did not start: {sniff.stderr.read()[-500:]}")
        # Adverts heard before the loss starts anchor the first gap.
        time.sleep(2 * interval + 0.05)
        loss.start(percent)
        t0 = time.monotonic()
        time.sleep(seconds)                 # the experiment itself, not a wait for a condition
        frames, dropped = loss.counters()
        loss.stop()
        t1 = time.monotonic()
        out, _ = sniff.communicate(timeout=seconds + tail + 60)
        heard = [t for t, src, _prio in json.loads(out) if src == h1.addr]
        # Both back to where they were (the backup may be master for an advert or two).
        wait_for(lambda: d2.state() == "backup" and holders([h1, h2], VIP) == ["h1"], 30,
                 what="the pair back to h1 master, h2 backup")
        t1_new, t2_new = d1.transitions()[n1:], d2.transitions()[n2:]
        window = [t for t in heard if t0 - 5 * interval <= t <= t1 + tail]
        runs = gaps(window, interval)
        need = lost_in_a_row_to_take_over(version, interval, H2)
        sent = round((t1 - t0) / interval)
        return {
            "version": version, "interval": interval, "seconds": seconds, "percent": percent,
            "master_down_s": round(down, 4), "lost_in_a_row_to_take_over": need,
            "frames": frames, "dropped": dropped, "frame_loss": round(dropped / frames, 4) if frames else None,
            "adverts_sent": sent, "adverts_heard": len([t for t in heard if t0 <= t <= t1]),
            "runs": {str(k): runs.count(k) for k in sorted(set(runs)) if k},
            "runs_long_enough": sum(1 for r in runs if r >= need),
            "runs_one_short": sum(1 for r in runs if r == need - 1),
            "runs_one_more": sum(1 for r in runs if r >= need + 1),
            "takeovers": sum(1 for t in t2_new if t["to"] == "master"),
            "backup_transitions": len(t2_new), "master_transitions": len(t1_new),
            "takeover_reasons": sorted({t["reason"] for t in t2_new if t["to"] == "master"})[:5],
            "expected": expected(percent / 100, sent, need).__dict__,
        }
    finally:
        loss.stop()
        d1.kill()
        d2.kill()
