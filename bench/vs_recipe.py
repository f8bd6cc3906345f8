"""The headline benchmark: the recipe (keepalived + its scripts) against havip, side by side.

One MilvusLab with the real Milvus 2.3.5 standalone server (havip.lab.standalone): h1
(priority 110) and h2 (priority 91), each with its own dockerd and a `milvus` container
on one shared directory, and a client namespace. Two systems take turns on these same
hosts, trial by trial (recipe, havip, recipe, havip, ...):

- **recipe**: Debian's keepalived 2.2.7 with the HA seed's keepalived.conf (master and
  backup), chk_milvus.sh, start_docker.sh and stop_docker.sh, read from
  tests/fixtures/seed and changed only where the lab must (interface, VIP, script paths,
  the container's name) and in stop_docker.sh's `docker start`, which its author meant to
  be `docker stop` (RECIPE_CHANGES lists every change). The scripts reach their host's
  own dockerd through DOCKER_HOST. As the recipe says, h1's Milvus is started by hand
  and h2's is left stopped before keepalived starts.
- **havip**: `havip run` on both hosts with the lab's standalone settings (MilvusLab).

Faults, on h1 while it serves: container killed (`docker kill`), Milvus hung (SIGSTOP of
the `milvus` process), link cut (h1's switch port down), service stopped (SIGTERM to
keepalived / havip on h1), split brain (bridge port isolation of h1 and h2: both keep
their link and the client, neither hears the other; the storage stays shared).

Measured per trial: a probe (bench/milvus_failover.py's) searching through the VIP every
50 ms gives the client's outage (fault -> first successful search after the failure it
caused) and what it saw; the lab client (havip.lab.client) inserts 10 rows every 0.2 s,
acknowledged when the insert returns, and after the trial reads every acknowledged id
back with Strong consistency (rows lost); the Sampler (havip.lab.sampler) asks both
engines every 50 ms which Milvus runs (windows with two Milvus running); a thread records
who holds the VIP. Every fault is repaired after the service came back or after CAP
seconds (the recipe never notices some faults: that is a result, reported as ">= CAP"),
and the lab is reset to "h1 serves, h2 stands by" before each trial.

Usage (root): python bench/vs_recipe.py [--trials N] [--out docs/benchmarks-vs-recipe.md] [--json F]
Re-render from a dump (no root, no lab): python bench/vs_recipe.py --from-json F --out ...
(docs/benchmarks-vs-recipe.json is the committed report's raw trials: {"runs": [dump, ...]}
when the report merges runs of different faults.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import milvus_failover as mf  # noqa: E402 - the probe and the report helpers

SEED = ROOT / "tests" / "fixtures" / "seed"
SECURITY_WARNING = "SECURITY VIOLATION - scripts are being executed but script_security not enabled."
SYSTEMS = ("recipe", "havip")
FAULTS = ("container killed", "Milvus hung", "link cut", "service stopped (SIGTERM)", "split brain")
MILVUS_FAULTS = ("container killed", "Milvus hung")      # the ratio target applies here
CAP = 60.0            # s after the fault before the bench repairs it, whether or not the service is back
SPLIT_HOLD = 30.0     # s the split brain lasts
SETTLE = 15.0         # s watched after the repair (failbacks, a second Milvus)
PROBE_PERIOD, PROBE_TIMEOUT = 0.05, 1.0   # the real server: 1 s per search (milvus-lite's 0.5 s is short)

# What the serving server's channel checkpoint is when the fault comes (--checkpoint):
# "flushed": the trial flushes once before its writes, as a server running for longer
# than syncPeriod + 1 min would have a recent checkpoint; "aged": as the lab left it
# (servers that lived under a minute each never move it: the replay grows with the lab).
CHECKPOINTS = ("flushed", "aged")

# Every change made to the seed, as (file, seed text, lab text, why). Nothing else differs.
RECIPE_CHANGES = [
    ("master/keepalived.conf", "interface enp7s0", "interface eth0", "the lab host's interface"),
    ("master/keepalived.conf", "192.168.1.104/24", "198.18.0.100/24", "the lab's VIP"),
    ("master/keepalived.conf", "/etc/keepalived/chk_milvus.sh", "{dir}/master/chk_milvus.sh",
     "the script's path in the bench's workdir"),
    ("backup/keepalived.conf", "interface enp3s0", "interface eth0", "the lab host's interface"),
    ("backup/keepalived.conf", "192.168.1.104/24", "198.18.0.100/24", "the lab's VIP"),
    ("backup/keepalived.conf", "/etc/keepalived/start_docker.sh", "{dir}/backup/start_docker.sh",
     "the script's path in the bench's workdir"),
    ("backup/keepalived.conf", "/etc/keepalived/stop_docker.sh", "{dir}/backup/stop_docker.sh",
     "the script's path in the bench's workdir"),
    ("master/chk_milvus.sh", "<docker id>", "milvus", "the lab's container name"),
    ("backup/start_docker.sh", "<docker id>", "milvus", "the lab's container name"),
    ("backup/stop_docker.sh", "<docker id>", "milvus", "the lab's container name"),
    ("backup/stop_docker.sh", "docker start milvus\n", "docker stop milvus\n",
     "the seed's bug: its text says the script stops the backup's Milvus, its code started it"),
]


def render_recipe(out: Path) -> dict[str, str]:
    """The seed's files with RECIPE_CHANGES applied, written under `out` (scripts
    executable); returns {relative path: text}. Each change must apply: a seed that
    changed under us fails loudly instead of running something else."""
    files = {p.relative_to(SEED).as_posix(): p.read_text() for p in sorted(SEED.glob("*/*"))}
    for rel, old, new, _why in RECIPE_CHANGES:
        if old not in files[rel]:
            raise RuntimeError(f"{SEED / rel}: {old!r}: not found; the seed changed")
        files[rel] = files[rel].replace(old, new.replace("{dir}", str(out)))
    for rel, text in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        if p.suffix == ".sh":
            p.chmod(0o755)
    return files


# ====================================================================== the systems


class Recipe:
    """keepalived with the seed's configuration on h1 (master) and h2 (backup)."""

    name = "recipe"

    def __init__(self, lab, workdir: Path):
        from havip.lab.keepalived import Keepalived

        self.lab = lab
        self.dir = workdir / "recipe"
        self.files = render_recipe(self.dir)

        class WithDocker(Keepalived):       # the scripts reach their own host's dockerd
            def __init__(self, host, conf, wd, docker_url):
                super().__init__(host, conf, wd)
                self.docker_url = docker_url

            def argv(self):
                return ["env", f"DOCKER_HOST={self.docker_url}", *super().argv()]

            def check(self):
                """`--config-test`, where the seed's one complaint is accepted: its scripts run as
                root without `enable_script_security`, which keepalived reports (exit 6) and
                then runs them anyway, as on the recipe's servers."""
                try:
                    super().check()
                except RuntimeError as exc:
                    said = {ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()}
                    if said != {SECURITY_WARNING}:
                        raise

        self.k = {h: WithDocker(lab.hosts[h], self.files[f"{role}/keepalived.conf"], self.dir / "run",
                                lab.dockerds[h].url) for h, role in (("h1", "master"), ("h2", "backup"))}

    def start(self) -> None:
        """As the recipe says: h1's Milvus started by hand, h2's stopped, then keepalived."""
        api = self.lab.api("h1")
        try:
            api.start("milvus")
        finally:
            api.close()
        self.k["h1"].start()
        time.sleep(0.5)
        self.k["h2"].start()

    def stop(self) -> None:
        for h in ("h2", "h1"):
            try:
                self.k[h].stop(timeout=15)
            except Exception:  # noqa: BLE001 - a keepalived that does not stop is killed
                self.k[h].kill()

    def stop_service(self, host: str) -> None:
        self.k[host].stop(timeout=15)

    def logs(self) -> dict[str, str]:
        return {h: k.log() for h, k in self.k.items()}


class Havip:
    name = "havip"

    def __init__(self, lab):
        self.lab = lab

    def start(self) -> None:
        self.lab.start_havip("h1")
        self.lab.wait_serving("h1", 150)
        self.lab.start_havip("h2")
        self.lab.havipds["h2"].wait_state("backup", 60)

    def stop(self) -> None:
        for h in ("h2", "h1"):
            d = self.lab.havipds[h]
            if d.running:
                try:
                    d.stop(timeout=40)
                except Exception:  # noqa: BLE001
                    d.kill()
                    d.cleanup()

    def stop_service(self, host: str) -> None:
        d = self.lab.havipds[host]
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(60)


# ====================================================================== watching


class VipWatch(threading.Thread):
    """Who holds the VIP, every 0.1 s: a list of (wall time, holders) at each change."""

    def __init__(self, lab):
        super().__init__(name="vip-watch", daemon=True)
        self.lab, self.changes, self._stop_ev = lab, [], threading.Event()

    def run(self) -> None:
        last = None
        while not self._stop_ev.is_set():
            t = time.time()
            try:
                now = tuple(self.lab.vip_holders())
            except Exception:  # noqa: BLE001 - a namespace going away at the end
                now = last
            if now != last:
                self.changes.append((t, list(now or ())))
                last = now
            self._stop_ev.wait(0.1)

    def stop(self) -> None:
        self._stop_ev.set()
        self.join(5)


def milvus_pid(lab, host: str) -> int:
    """The `milvus` process in host's container (PID 1 there is docker-init)."""
    return lab.milvus_pid(host)


# ====================================================================== one trial


class Bench:
    def __init__(self, lab, workdir: Path, checkpoint: str = "flushed", serve: float = 3.0):
        self.lab = lab
        self.workdir = workdir
        self.serve = serve                  # s of writes before the fault
        self.checkpoint = checkpoint        # CHECKPOINTS: what the serving server's channel checkpoint is at the fault
        self.systems = {"recipe": Recipe(lab, workdir), "havip": Havip(lab)}
        self.stopped: list[int] = []
        self.probe = self.client = self.sampler = self.vips = None
        self.missing: set[int] = set()
        self.unread: dict | None = None     # a trial whose rows could not be read back at its end

    # ------------------------------------------------------------------ reset

    def reset(self, system: str) -> None:
        """Everything off, every fault undone, then `system` with h1 serving."""
        lab = self.lab
        for s in self.systems.values():
            s.stop()
        self.cont()
        lab.hosts["h1"].link_up()
        for h in ("h1", "h2"):
            lab.hosts[h].isolate(False)
        for h in ("h1", "h2"):
            if lab.container_running(h):
                api = lab.api(h, timeout=30)
                try:
                    api.stop("milvus", timeout=5)
                finally:
                    api.close()
        self.systems[system].start()
        from havip.lab.netns import wait_for
        wait_for(lambda: lab.vip_holders() == ["h1"] and lab.container_running("h2") is False, 150,
                 interval=0.2, what=f"{system}: h1 alone on the VIP, h2's Milvus stopped")
        wait_for(self.probe.ok_now, 150, interval=0.1, what=f"{system}: the probe to search through the VIP")

    def cont(self) -> None:
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
        self.stopped.clear()

    # ------------------------------------------------------------------ faults

    def inject(self, system: str, fault: str) -> float:
        lab = self.lab
        if fault == "container killed":
            api = lab.api("h1")
            try:
                t0 = time.time()
                api.kill("milvus")
            finally:
                api.close()
        elif fault == "Milvus hung":
            pid = milvus_pid(lab, "h1")
            self.stopped.append(pid)
            t0 = time.time()
            os.kill(pid, signal.SIGSTOP)
        elif fault == "link cut":
            t0 = time.time()
            lab.hosts["h1"].link_down()
        elif fault == "service stopped (SIGTERM)":
            t0 = time.time()
            self.systems[system].stop_service("h1")
        elif fault == "split brain":
            t0 = time.time()
            lab.hosts["h1"].isolate(True)
            lab.hosts["h2"].isolate(True)
        else:
            raise ValueError(fault)
        return t0

    def repair(self, fault: str) -> bool:
        """Undo a fault that can be undone; True if something was."""
        if fault == "Milvus hung":
            self.cont()
        elif fault == "link cut":
            self.lab.hosts["h1"].link_up()
        elif fault == "split brain":
            for h in ("h1", "h2"):
                self.lab.hosts[h].isolate(False)
        else:
            return False      # a killed container or a stopped service stays so until the reset
        return True

    # ------------------------------------------------------------------ the trial

    def trial(self, system: str, fault: str) -> dict:
        self.reset(system)
        if self.unread is not None:       # the last trial left no service to read from: read now
            lost = self.read_back()
            if lost is not None:
                self.unread["lost_after_reset"] = sorted(lost - self.missing)
                self.missing |= lost
            self.unread = None
        if self.checkpoint == "flushed":
            # A server that has run a while has a channel checkpoint at most syncPeriod +
            # 1 min old; the bench's servers live under a minute, so without this their
            # checkpoint would stay at the lab's first minute and every takeover would
            # replay the whole lab's writes (CHECKPOINTS). One flush moves it to now.
            self.client.insert(10, flush=True)
        self.client.traffic_start(batch=10, period=0.2, flush=False)
        time.sleep(self.serve)                    # steady state: writes acknowledged, adverts, checks
        overl0 = len(self.sampler.overlaps)
        others = mf._other_labs(self.lab.prefix)
        t0 = self.inject(system, fault)
        hold = SPLIT_HOLD if fault == "split brain" else CAP
        deadline = t0 + hold
        while time.time() < deadline:             # the service back (and held a little), or the cap
            o = self.probe.outage_after(t0)
            if fault != "split brain" and o and o["first_ok"] and time.time() - o["first_ok"] > 2:
                break
            time.sleep(0.1)
        o = self.probe.outage_after(t0)
        recovered_before_repair = bool(o and o["first_ok"])
        t_repair = time.time()
        repaired = self.repair(fault)
        # Watch SETTLE s after the repair, and on until the service answers (at most CAP more).
        end = t_repair + SETTLE
        while time.time() < end or not self.probe.ok_now():
            if time.time() > t_repair + CAP:
                break
            time.sleep(0.1)
        t_end = time.time()
        rep = self.client.traffic_stop()
        lost_now = self.read_back()
        new_lost = sorted(lost_now - self.missing) if lost_now is not None else None
        if lost_now is not None:
            self.missing |= lost_now
        overlaps = self.sampler.overlaps[overl0:]
        flock = {h: self.etcd_flock_waits(h, t0) for h in ("h1", "h2")} if overlaps else {}
        r = {"system": system, "fault": fault, "t0": t0, "t_repair": t_repair if repaired else None,
             "t_end": t_end, "recovered_before_repair": recovered_before_repair,
             "outage": self.outage(t0, t_end), "acked": sum(n for _, n, *_ in rep["acked"]),
             "lost": new_lost, "overlap_windows": windows([o["at"] for o in overlaps]),
             "probe": [c for c in self.probe_changes() if t0 - 5 <= c["at"] <= t_end],
             "traffic": [e for e in rep["events"] if t0 - 5 <= e[0] <= t_end],
             "docker": {h: [c for c in tl if c[0] >= t0 - 5] for h, tl in self.sampler.changes_since(0).items()},
             "docker_before": {h: self.running_at(h, t0) for h in ("h1", "h2")},
             "vip": [c for c in self.vips.changes if t0 - 5 <= c[0] <= t_end],
             "vip_before": self.vip_at(t0), "etcd_flock_waits": flock, "other_labs": sorted(others | mf._other_labs(self.lab.prefix))}
        if system == "havip":
            events = self.lab.events()
            r["havip_ready"] = havip_ready(events, t0, t_end)
            r["session_sweeps"] = session_sweeps(events, t0, t_end)
        r["checkpoint"] = self.checkpoint
        r["replayed_from"] = self.replayed_from(t0, [h for h, tl in r["docker"].items()
                                                      if any(c[1] and c[0] >= t0 for c in tl)])
        if new_lost is None:
            self.unread = r
        return r

    def etcd_flock_waits(self, host: str, since: float) -> int:
        """How often host's Milvus logged, since `since`, that its embedded etcd waited for
        the database file another process holds locked: a second server on the shared data
        that could not open it while the first ran."""
        try:
            text = self.lab.milvus_log(host, since=since)
        except Exception:  # noqa: BLE001 - evidence only
            return -1
        return text.count("db file is flocked by another process")

    def replayed_from(self, t0: float, hosts: list[str]) -> dict[str, float]:
        """Per host in `hosts` (those whose Milvus started after the fault): how old (s,
        at the fault) the channel checkpoint was that its server began replaying the
        message queue from (the oldest of its channels), from its log; evidence only."""
        ages = {host: mf.replayed_from(self.lab, host, t0) for host in hosts}
        return {host: age for host, age in ages.items() if age is not None}

    def probe_changes(self) -> list[dict]:
        with self.probe._lock:
            return list(self.probe.changes)

    def running_at(self, host: str, t: float) -> bool | None:
        tl = [c for c in self.sampler.changes_since(0)[host] if c[0] <= t]
        return tl[-1][1] if tl else None

    def vip_at(self, t: float) -> list[str]:
        tl = [c for c in self.vips.changes if c[0] <= t]
        return tl[-1][1] if tl else []

    def outage(self, t0: float, t_end: float) -> dict:
        """The first outage the fault caused, all failing time in the trial, and the errors."""
        ch = [c for c in self.probe_changes() if c["at"] >= t0 - 0.001]
        o = self.probe.outage_after(t0)
        down, total, errors = None, 0.0, []
        for c in ch:
            if c["at"] > t_end:
                break
            if not c["ok"] and down is None:
                down = c["at"]
                errors.append(c["err"])
            elif c["ok"] and down is not None:
                total += c["at"] - down
                down = None
        if down is not None:
            total += t_end - down
        first = (o["first_ok"] - t0) if o and o["first_ok"] else (t_end - t0 if o else 0.0)
        return {"first": first, "ended": bool(o is None or o["first_ok"]), "failing_total": total,
                "first_error": o["error"] if o else None, "errors": errors,
                "first_fail": (o["first_fail"] - t0) if o else None}

    def read_back(self) -> set[int] | None:
        """Acknowledged ids that a Strong read through the VIP does not return."""
        for _ in range(6):
            try:
                present = set(self.client.ids(wait=120))
                return self.client.acked - present
            except Exception as exc:  # noqa: BLE001 - the service may still be coming back
                print(f"  read-back failed: {exc}", flush=True)
                time.sleep(5)
        return None


def havip_ready(events: list[dict], t0: float, t_end: float) -> float | None:
    """Seconds from the fault to havip's first "milvus is serving" (CheckHealth answered on
    the new master) within the trial, or None."""
    from havip.lab.milvuslab import log_time
    for e in events:
        if "timestamp" in e and str(e.get("reason", "")).startswith("milvus is serving"):
            at = log_time(e["timestamp"])
            if t0 <= at <= t_end:
                return at - t0
    return None


def session_sweeps(events: list[dict], t0: float, t_end: float) -> list[dict]:
    """havip's stale session sweeps within the trial: when (s after the fault), outcome,
    sentence (havip.runtime.sessions)."""
    from havip.lab.milvuslab import log_time
    return [{"at": round(log_time(e["timestamp"]) - t0, 2), "outcome": e.get("outcome"), "reason": e.get("reason")}
            for e in events if e.get("event") == "session_sweep" and "timestamp" in e
            and t0 <= log_time(e["timestamp"]) <= t_end]


def windows(times: list[float], gap: float = 0.5) -> list[tuple[float, float]]:
    """Sample times (50 ms apart) grouped into windows: [(first, last)]."""
    out: list[list[float]] = []
    for t in sorted(times):
        if out and t - out[-1][1] <= gap:
            out[-1][1] = t
        else:
            out.append([t, t])
    return [(a, b) for a, b in out]


# ====================================================================== the run


def run(trials: int, faults: tuple[str, ...], keep: bool, dump=None,
        checkpoint: str = "flushed", serve: float = 3.0, systems: tuple[str, ...] = SYSTEMS,
        milvus_settings: dict | None = None) -> tuple[list[dict], dict]:
    """The trials; `dump(results, info)` is called after each one (a partial run is kept)."""
    from havip.lab.milvuslab import MilvusLab
    from havip.lab.sampler import Sampler

    mf.PROBE_PERIOD, mf.PROBE_RPC_TIMEOUT = PROBE_PERIOD, PROBE_TIMEOUT
    workdir = Path(tempfile.mkdtemp(prefix="hvr", dir="/tmp"))
    lab = MilvusLab(workdir / "lab", prefix="hvr" + secrets.token_hex(2), milvus="standalone",
                    milvus_settings=milvus_settings)
    bench = Bench.__new__(Bench)
    results: list[dict] = []
    from havip.lab.standalone import LAB_OVERRIDES

    info: dict = {"errors": [], "workdir": str(workdir), "prefix": lab.prefix,
                  "milvus_settings": {**LAB_OVERRIDES, **(milvus_settings or {})}}   # what the image had
    try:
        print(f"building the lab in {workdir} (namespaces {lab.prefix}-*)", flush=True)
        lab.build()
        bench.__init__(lab, workdir, checkpoint, serve)
        info["recipe_files"] = bench.systems["recipe"].files
        bench.sampler = Sampler(lab)
        bench.sampler.start()
        bench.vips = VipWatch(lab)
        bench.vips.start()
        # The collection is made once, under havip (either would do), then the probe starts.
        bench.systems["havip"].start()
        c = lab.client(collection="bench")
        try:
            c.create()
            c.insert(50, flush=True)
        finally:
            c.close()
        bench.probe = mf.Probe(lab, "bench", workdir / "probe.log")
        bench.client = lab.client(collection="bench")
        plan = [(i, f, s) for i in range(trials) for f in faults for s in systems]
        for i, fault, system in plan:
            print(f"trial {i + 1}/{trials}: {system}: {fault} ...", flush=True)
            try:
                r = bench.trial(system, fault)
            except Exception as exc:  # noqa: BLE001 - recorded; the next reset repairs the lab
                info["errors"].append(f"{system}, {fault}, trial {i + 1}: {type(exc).__name__}: {exc}")
                print(f"  FAILED: {exc}", flush=True)
                traceback.print_exc()
                try:
                    bench.client.traffic_stop()
                except Exception:  # noqa: BLE001
                    pass
                continue
            r["trial"] = i + 1
            results.append(r)
            if dump:
                dump(results, info)
            o = r["outage"]
            print(f"  outage {o['first']:.1f} s ({'ended' if o['ended'] else 'NOT ended'}), failing "
                  f"{o['failing_total']:.1f} s, acked {r['acked']}, lost {r['lost'] if r['lost'] is None else len(r['lost'])}, "
                  f"two-Milvus windows {len(r['overlap_windows'])}", flush=True)
        info["recipe_logs"] = bench.systems["recipe"].logs()
    finally:
        for part in ("systems",):
            for s in getattr(bench, part, {}).values():
                try:
                    s.stop()
                except Exception:  # noqa: BLE001
                    pass
        bench.cont() if hasattr(bench, "stopped") else None
        for name in ("probe", "client"):
            x = getattr(bench, name, None)
            if x is not None:
                try:
                    x.close()
                except Exception:  # noqa: BLE001
                    pass
        if getattr(bench, "vips", None) is not None:
            bench.vips.stop()
        if getattr(bench, "sampler", None) is not None:
            bench.sampler.stop()
            info["sampler"] = bench.sampler.summary()
        lab.down()
        if keep:
            print(f"kept {workdir} (logs only; the lab is down)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results, info


# ====================================================================== plots


def plot(results: list[dict], fault: str, path: Path) -> bool:
    """Both systems' median trial of `fault` on one time axis: the client's searches, each
    host's Milvus (Docker's view) and who holds the VIP."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "havip"      # the same SVG from the same trials
    import matplotlib.pyplot as plt

    picks = {}
    for s in SYSTEMS:
        rs = sorted([r for r in results if r["system"] == s and r["fault"] == fault],
                    key=lambda r: r["outage"]["first"])
        if rs:
            picks[s] = rs[len(rs) // 2]
    if not picks:
        return False
    span = max(r["t_end"] - r["t0"] for r in picks.values())
    fig, axes = plt.subplots(len(picks), 1, figsize=(9, 2.1 * len(picks) + 0.6), sharex=True, squeeze=False)
    rows = ["client search", "VIP on h1", "VIP on h2", "Milvus h1", "Milvus h2", "two Milvus"]
    for ax, (s, r) in zip(axes[:, 0], picks.items()):
        t0 = r["t0"]
        end = r["t_end"] - t0

        def bars(changes, state0, y, color):
            segs, cur, since = [], state0, -5.0
            for at, val in changes:
                x = at - t0
                if cur:
                    segs.append((since, x - since))
                cur, since = val, x
            if cur:
                segs.append((since, end - since))
            ax.broken_barh([(a, max(w, 0.05)) for a, w in segs], (y - 0.35, 0.7), color=color)

        bars([(c["at"], c["ok"]) for c in r["probe"] if c["at"] >= t0 - 5], True, 5, "tab:green")
        bars([(c["at"], not c["ok"]) for c in r["probe"] if c["at"] >= t0 - 5], False, 5, "tab:red")
        bars([(a, "h1" in v) for a, v in r["vip"]], "h1" in r["vip_before"], 4, "tab:blue")
        bars([(a, "h2" in v) for a, v in r["vip"]], "h2" in r["vip_before"], 3, "tab:blue")
        bars([(a, v) for a, v in r["docker"]["h1"]], r["docker_before"]["h1"], 2, "tab:gray")
        bars([(a, v) for a, v in r["docker"]["h2"]], r["docker_before"]["h2"], 1, "tab:gray")
        ax.broken_barh([(a - t0, b - a + 0.05) for a, b in ow(r)], (-0.35, 0.7), color="tab:orange")
        ax.axvline(0, color="black", lw=1)
        ax.text(0.2, 5.45, "fault", fontsize=8)
        if r.get("t_repair"):
            ax.axvline(r["t_repair"] - t0, color="black", lw=1, ls="--")
            ax.text(r["t_repair"] - t0 + 0.2, 5.45, "repaired", fontsize=8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(list(reversed(rows)), fontsize=8)
        ax.set_ylim(-0.6, 5.9)
        o = r["outage"]
        ax.set_title(f"{s}: outage {o['first']:.1f} s{'' if o['ended'] else ' (not over)'}, "
                     f"{len(ow(r))} window(s) with two Milvus", fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlim(-3, span + 1)
    axes[-1, 0].set_xlabel("seconds after the fault (green/red: the client's searches succeed/fail; "
                           "blue: VIP held; gray: Milvus running; orange: on both hosts)", fontsize=8)
    fig.suptitle(f"{fault}: the recipe and havip on the same hosts", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format=path.suffix[1:], **({"metadata": {"Date": None}} if path.suffix == ".svg" else {}))
    plt.close(fig)
    return True


# ====================================================================== the report


def marks(r: dict) -> dict:
    """Seconds after the fault at which Docker saw h1's Milvus stop and h2's start, and the
    VIP first appeared on h2 (None: not in the trial)."""
    t0 = r["t0"]
    h1_stop = next((a for a, v in r["docker"]["h1"] if a >= t0 and not v), None)
    h2_run = next((a for a, v in r["docker"]["h2"] if a >= t0 and v), None)
    vip2 = next((a for a, v in r["vip"] if a >= t0 and "h2" in v), None)
    return {k: (None if v is None else v - t0) for k, v in
            (("h1_stopped", h1_stop), ("h2_started", h2_run), ("vip_h2", vip2))}


def _med(rs: list[dict], key: str) -> float | None:
    xs = [marks(r)[key] for r in rs if marks(r)[key] is not None]
    return statistics.median(xs) if xs else None


def ow(r: dict) -> list[tuple[float, float]]:
    """The trial's windows with two Milvus, within [fault, trial end], samples up to 1 s apart
    joined (under load the Sampler's interval stretched to ~0.5 s)."""
    inside = [(a, b) for a, b in r["overlap_windows"] if b >= r["t0"] and a <= r["t_end"]]
    merged: list[list[float]] = []
    for a, b in sorted(inside):
        a, b = max(a, r["t0"]), min(b, r["t_end"])
        if merged and a - merged[-1][1] <= 1.0:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def writer_back(r: dict) -> float | None:
    """Seconds from the fault to the writer's first success after its first failure."""
    down = False
    for at, ok, _ in r["traffic"]:
        if at < r["t0"]:
            continue
        if not ok:
            down = True
        elif down:
            return at - r["t0"]
    return None


def by_all(by: dict) -> list[dict]:
    return [r for rs in by.values() for r in rs]


def findings(by: dict, faults) -> list[str]:
    """Why each system did what it did: the mechanism (from both configurations) with the
    figures of these trials."""
    out = []

    def fig(s, f):
        rs = by.get((s, f), [])
        if not rs:
            return None
        o = [r["outage"]["first"] for r in rs]
        return {"n": len(rs), "outage": statistics.median(o), "ended": all(r["outage"]["ended"] for r in rs),
                "h2": _med(rs, "h2_started"), "vip": _med(rs, "vip_h2"), "h1stop": _med(rs, "h1_stopped"),
                "two": sum(len(ow(r)) for r in rs),
                "twolen": sum(b - a + 0.05 for r in rs for a, b in ow(r)),
                "lost": sum(len(r["lost"] or r.get("lost_after_reset") or []) for r in rs)}

    def after_start(x):
        if x is None or x["h2"] is None:
            return "-"
        return f"{x['outage'] - x['h2']:.1f}"

    f = "container killed"
    k, h = fig("recipe", f), fig("havip", f)
    if k and h:
        out.append(
            f"- **{f}.** The recipe: `chk_milvus.sh` runs every 2 s and sees `Running=false`; weight -20 "
            f"drops h1 to 90, below h2's 91, and h2 (preempting) ignores the lower adverts until its "
            f"master-down interval (3 x 1 s + 0.64 s skew) runs out, then `start_docker.sh`: h2's Milvus "
            f"started at +{_s(k['h2'])} s (median). havip: the engine's `die` event runs h1's checks at once "
            f"and an exited container is a final failure (no `fall` to wait for: docs/configuration.md), so "
            f"h1 resigns with priority 0 within milliseconds; h2 takes over after its skew time (0.64 s at "
            f"priority 91), takes the lease and starts its Milvus at +{_s(h['h2'])} s. From that start to the client's first answer both then wait for the real "
            f"server's start-up on the other host ({after_start(k)} s recipe, "
            f"{after_start(h)} s havip). havip starts Milvus "
            f"{_s((k['h2'] or 0) - (h['h2'] or 0))} s earlier; "
            + ("the start-up both wait for is most of either outage, so that alone cannot make havip's "
               "outage half the recipe's." if h["outage"] > 0.5 * k["outage"] else
               "enough here for half the recipe's outage.") + sweeps_sentence(by.get(("havip", f), [])))
    f = "Milvus hung"
    k, h = fig("recipe", f), fig("havip", f)
    if k and h:
        out.append(
            f"- **{f}.** The recipe's only check asks Docker whether the container runs; a stopped "
            f"(SIGSTOP) process still runs for Docker, so keepalived never moves the VIP and the client "
            + ("waited until the bench ended the hang" if k["h2"] is None else
               f"waited (h2's Milvus started only at +{_s(k['h2'])} s)")
            + f": outage {'>= ' if not k['ended'] else ''}{_s(k['outage'])} s, bounded only by the bench's "
            f"{CAP:.0f} s cap. "
            + (f"In {sum(1 for r in by[('recipe', f)] if marks(r)['h1_stopped'] is not None)} of {k['n']} "
               f"trial(s), after the bench's SIGCONT, h1's Milvus exited by itself (Docker saw it stop at "
               f"+{_s(k['h1stop'])} s; most likely its sessions had expired during the stall, after which "
               f"Milvus exits on purpose: docs/milvus-standalone.md), and only that stop made the recipe "
               f"fail over; in the other(s) it stayed up without answering to the end of the trial. "
               if k["h1stop"] is not None else "") + f" havip's gRPC CheckHealth times out ({'1 s'} deadline, fall 2): h1 kills "
            f"the hung container without grace, h2 starts its own at +{_s(h['h2'])} s; outage "
            f"{_s(h['outage'])} s.")
    f = "link cut"
    k, h = fig("recipe", f), fig("havip", f)
    if k and h:
        out.append(
            f"- **{f}.** The recipe: h1's keepalived sees no carrier (FAULT) and drops the VIP, but nothing "
            f"stops h1's Milvus (the master's configuration has no notify script); h2 takes over after "
            f"its master-down interval and starts a second Milvus on the same data at +{_s(k['h2'])} s: "
            f"{k['two']} window(s) with two Milvus, {k['twolen']:.1f} s in all. havip: h1 kills its Milvus "
            f"as its link goes (Docker saw it stopped at +{_s(h['h1stop'])} s), h2 starts its own at "
            f"+{_s(h['h2'])} s, after the lease; {h['two']} window(s) with two Milvus.")
    f = "service stopped (SIGTERM)"
    k, h = fig("recipe", f), fig("havip", f)
    if k and h:
        out.append(
            f"- **{f}.** The recipe: keepalived on h1 sends priority 0 and removes the VIP as it exits, but "
            f"h1's Milvus keeps running (stopped at {'+' + _s(k['h1stop']) + ' s' if k['h1stop'] else 'no point in the trial'}); "
            f"h2 starts its own at +{_s(k['h2'])} s: {k['two']} window(s) with two Milvus "
            f"({k['twolen']:.1f} s). "
            + ("The client never got an answer again in the trial: the VIP now leads to h2, whose server "
               "cannot start while h1's runs on the same data (docs/milvus-standalone.md, \"Two servers on one data directory\"), and nothing in the recipe stops "
               "h1's: the outage lasts until an operator steps in. " if not k["ended"] else "")
            + "havip: h1 removes the VIP, stops its Milvus with grace "
            f"(stopped at +{_s(h['h1stop'])} s), then resigns; h2 starts at +{_s(h['h2'])} s.")
    f = "split brain"
    k, h = fig("recipe", f), fig("havip", f)
    if k and h:
        out.append(
            f"- **{f}.** Both hosts keep their links and the client, neither hears the other. The recipe: "
            f"h2 becomes master, takes the VIP too (at +{_s(k['vip'])} s) and starts a second Milvus "
            f"(+{_s(k['h2'])} s) on the data h1's Milvus is serving: {k['two']} window(s) with two Milvus "
            f"({k['twolen']:.1f} s); the client follows whichever host answered ARP last. havip: h2 becomes "
            f"master by VRRP but cannot take the storage lease h1 holds, so it "
            + ("keeps the VIP and Milvus off" if h["vip"] is None and h["h2"] is None else
               f"(VIP at +{_s(h['vip'])} s, Milvus at +{_s(h['h2'])} s)")
            + f": {h['two']} window(s) with two Milvus; the client's outage {_s(h['outage'])} s.")
    gaps = [(r["outage"]["first"] - r["havip_ready"], r["havip_ready"]) for r in by_all(by)
            if r["system"] == "havip" and r.get("havip_ready") is not None and r["outage"]["ended"]
            and r["outage"]["first_fail"] is not None]
    agree = [abs(w - r["outage"]["first"]) for r in by_all(by) if r["outage"]["first_fail"] is not None
             and r["outage"]["ended"] and (w := writer_back(r)) is not None]
    if gaps:
        g = [x for x, _ in gaps]
        out.append(f"- **Healthy is not yet searchable.** In havip's trials the new master's Milvus answered "
                   f"CheckHealth {_cell([y for _, y in gaps])} s after the fault, and the client's first "
                   f"successful search came {_cell(g)} s after that (median, min..max of {len(g)}): the "
                   "client reconnects and loads the collection again, and the new server must first "
                   "recover it from the shared storage (the message queue replayed from the channel's "
                   "checkpoint, `delegator search failed to wait tsafe` in its log, then the segments: "
                   "docs/milvus-standalone.md, \"The write-ahead log replay\"). "
                   + (f"The writer (5 s deadline) got its first insert through within "
                      f"{max(agree):.1f} s of the probe (1 s deadline) in every one of these trials: the "
                      "wait is the server's, not the probe's deadline. " if agree else "")
                   + "The recipe's clients "
                   "wait for the same recovery; it is part of both systems' outage on the Milvus faults, "
                   "and neither system's VRRP or checks can shorten it.")
    waits = [(r["fault"], h, n) for r in by_all(by) if r["system"] == "recipe"
             for h, n in (r.get("etcd_flock_waits") or {}).items() if n and n > 0]
    if waits:
        out.append("- **The second Milvus.** In the recipe's trials with two Milvus containers running, "
                   "the second server's embedded etcd logged `db file is flocked by another process` ("
                   + ", ".join(f"{f}: {h} {n}x" for f, h, n in waits) + "): the first server's etcd holds "
                   "its bbolt database file locked, so the second cannot open the shared metadata and "
                   "never serves while the first runs. The overlap is two servers started on one data "
                   "directory, held apart here by a local flock that an NFS mount may or may not honour.")
    lost_k = sum((fig("recipe", f) or {}).get("lost", 0) for f in faults)
    out.append(f"- **Acknowledged rows.** Where read, the recipe lost {lost_k}, havip "
               f"{sum((fig('havip', f) or {}).get('lost', 0) for f in faults)} (Strong read of every row "
               "acknowledged by an insert, after each trial). "
               + ("Two Milvus on one data directory did not lose an acknowledged row in these trials: the "
                  "second server's embedded etcd and rocksmq on the same files is a hazard these few trials "
                  "cannot rule out, not a measured loss." if lost_k == 0 else ""))
    return out


def checkpoint_paragraph(results: list[dict], flushed: bool) -> list[str]:
    """Why the trials flush once (or do not), with the checkpoint ages they replayed from."""
    ages = [a for r in results for a in (r.get("replayed_from") or {}).values()]
    seen = (f" In these trials the server that took over replayed from a checkpoint {_cell(ages)} s old at "
            f"the fault (median, min..max of {len(ages)}; the `channel seek position` in its log)." if ages else "")
    if flushed:
        return ["**Checkpoint.** A new server replays the message queue from the channel checkpoint before it "
                "answers a Strong search, and Milvus 2.3 moves that checkpoint only after a segment's buffer "
                "is synced (every `dataNode.segment.syncPeriod`) and at most once a minute: a server that has "
                "served for a while is at most syncPeriod + 1 min behind. The bench's servers live under a "
                "minute each, so without help their checkpoint would stay where the lab began and every "
                "takeover, of either system, would replay the whole run's writes, growing trial by trial "
                "(measured with `--checkpoint aged`: docs/milvus-standalone.md, \"The write-ahead log "
                "replay\"). So each trial flushes once before its writes, for both systems: the replay is "
                "then the trial's own few seconds of writes, the best case of a long-running server." + seen, ""]
    return ["**Checkpoint.** `--checkpoint aged`: no flush before the trials, so each takeover replays the "
            "message queue from wherever the lab's channel checkpoint was left (the bench's servers live "
            "under a minute, which does not move it): the replay grows with the run." + seen, ""]


def sweeps_sentence(rs: list[dict]) -> str:
    """What havip's stale session sweep did in these trials (docs/milvus-standalone.md)."""
    sw = [x for r in rs for x in r.get("session_sweeps") or []]
    if not sw:
        return ""
    cleared = [x for x in sw if x["outcome"] == "cleared"]
    other = sorted({x["outcome"] for x in sw} - {"cleared"})
    return (f" The two starts differ in one thing: havip holds the storage lease, so the sessions the killed "
            f"server left in the embedded etcd are known stale, and its session sweep revoked them in "
            f"{len(cleared)} of {len(sw)} start(s) ("
            + (f"median +{statistics.median([x['at'] for x in cleared]):.1f} s after the fault" if cleared else "none")
            + (f"; other outcomes: {', '.join(other)}" if other else "") + "), so its server registered "
            "without waiting for them to expire; the recipe's server waits a session TTL after its etcd "
            "is up (docs/milvus-standalone.md, \"A takeover, step by step\").")


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _cell(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return _s(xs[0])
    return f"{_s(statistics.median(xs))} ({_s(min(xs))}..{_s(max(xs))})"


def saw(r: dict) -> str:
    """What the client saw, in one line."""
    o = r["outage"]
    if o["first_fail"] is None:
        return "nothing: every search succeeded"
    errs = []
    for e in o["errors"]:
        e = re.sub(r"\s+", " ", e)[:80]
        if e not in errs:
            errs.append(e)
    text = f"searches failed from +{o['first_fail']:.1f} s" + \
        (f" until +{o['first']:.1f} s" if o["ended"] else " to the end of the trial")
    if len(o["errors"]) > 1:
        text += f" ({len(o['errors'])} separate outages, {o['failing_total']:.1f} s in all)"
    return text + "; errors: " + "; ".join(f"`{e}`" for e in errs[:2])


def render(results, info, trials, faults, machine, load, revision, plots, when=None) -> str:
    from havip.lab.milvuslab import STANDALONE_SETTINGS, VIP
    from havip.lab.standalone import LAB_OVERRIDES, MILVUS_VERSION

    when = when or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    by = {(s, f): [r for r in results if r["system"] == s and r["fault"] == f] for s in SYSTEMS for f in faults}
    flushed = any(r.get("checkpoint") == "flushed" for r in results)
    settings = info.get("milvus_settings") or LAB_OVERRIDES     # a dump from before it was recorded: today's
    counts = sorted({len(v) for v in by.values()})
    done = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]} (see each row)"
    out = ["# Benchmark: the recipe against havip on real Milvus standalone", "",
           f"Measured {when} on {machine}; {revision}; Milvus {MILVUS_VERSION} standalone (PyPI `milvus` "
           f"wheel in the lab image), {', '.join(v for v in mf._versions().split(', ') if not v.startswith('milvus-lite'))}. "
           f"Load average before the run {load}. By `bench/vs_recipe.py --trials {trials}` "
           "(`make bench-recipe`).", "",
           f"**Trials: {done} per fault and system** ({trials} planned; the machine has 2 cores shared with other work and "
           "each takeover of the real server takes 10-50 s; `make bench-recipe RECIPE_TRIALS=n` runs n). One trial is evidence on "
           "one machine, not a distribution; where a cell has one figure there was one trial.", "",
           *mf._others_line(results),
           "## Setup", "",
           f"The same lab hosts for both systems (`MilvusLab`, `--milvus standalone`): h1 (198.18.0.11) "
           f"and h2 (198.18.0.21) in network namespaces on one bridge, each with its own dockerd and a "
           f"`milvus` container (docker-init as PID 1, host network, docker stop grace "
           f"{STANDALONE_SETTINGS['stop_timeout']} s) of the same image, all data (embedded etcd, rocksmq, "
           f"storage) on one shared directory; a client namespace; VIP {VIP}. The Milvus image carries "
           f"the lab's Milvus settings for both systems ({', '.join(f'`{k}: {v}`' for k, v in settings.items())}, "
           "docs/milvus-standalone.md): with Milvus' defaults every takeover of either system would wait "
           "~54 s for the old server's sessions.", "",
           "| | recipe | havip |", "|---|---|---|",
           "| VRRP | v2, advert 1 s, VRID 51, PASS 1111, h1 priority 110 (MASTER), h2 91 (BACKUP), preempt | "
           "the same VRRP settings, `preempt: false` (the shipped standalone configuration) |",
           "| Milvus check | h1 only: `chk_milvus.sh` (`docker inspect .State.Running`) every 2 s, weight -20 "
           f"| both hosts: Docker state and gRPC CheckHealth every {STANDALONE_SETTINGS['check_interval']} s, "
           f"timeout {STANDALONE_SETTINGS['check_timeout']} s, rise {STANDALONE_SETTINGS['rise']}, fall "
           f"{STANDALONE_SETTINGS['fall']} |",
           "| who starts Milvus | h1's by hand, before keepalived; h2's by `start_docker.sh` on notify_master |"
           f" the master, after taking the storage lease; start_timeout {STANDALONE_SETTINGS['start_timeout']} s |",
           "| who stops Milvus | h2's by `stop_docker.sh` on notify_backup; h1's never | a leaving master "
           "(killed without grace after failed checks or a lost link; stopped with grace on SIGTERM) |",
           "| single writer | none | flock storage lease on the shared directory |", "",
           "The recipe's files are the seed's (tests/fixtures/seed), changed only as follows:", "",
           "| file | seed | lab | why |", "|---|---|---|---|",
           *[f"| {f} | `{a.strip()}` | `{b.strip().replace('{dir}', '<workdir>/recipe')}` | {w} |"
             for f, a, b, w in RECIPE_CHANGES],
           "", "keepalived runs with `DOCKER_HOST` set to its host's dockerd, which its scripts inherit.", "",
           "Each trial: the lab is reset (both systems stopped, both containers stopped, the fault undone), "
           "the system under test started with h1 serving and h2 standing by, "
           + ("the client flushes once (see *Checkpoint* below), " if flushed else "")
           + "the client writes for 3 s, "
           f"then the fault. The bench repairs the fault (SIGCONT, link up, isolation off) once the "
           f"client's searches succeed again for 2 s, or after {CAP:.0f} s if they do not (split brain: "
           f"after {SPLIT_HOLD:.0f} s), watches {SETTLE:.0f} s more, stops the writes and reads back every "
           "acknowledged row. A killed container or a stopped service is left so until the next reset.", "",
           f"- **client outage**: fault -> the probe's first successful search after the first failure "
           f"the fault caused (the probe searches through the VIP every {PROBE_PERIOD * 1000:.0f} ms, "
           f"{PROBE_TIMEOUT:g} s deadline, a fresh connection after a failure). `>= N` means the service "
           "was not back when the trial ended. *Failing in all*: every second of failed searches in the "
           "trial, repair and its aftermath included;",
           "- **rows lost**: rows acknowledged by insert (10 every 0.2 s, no flush) that the Strong read "
           "after the trial did not return;",
           "- **two Milvus**: windows in which the Sampler (both engines every 50 ms) saw a Milvus "
           "container running on both hosts, and their total length.", "",
           *checkpoint_paragraph(results, flushed)]

    out += ["## Results", "", "| fault | system | trials | client outage, s | failing in all, s | rows lost "
            "(of acknowledged) | two-Milvus windows (s) |", "|---|---|---|---|---|---|---|"]
    for f in faults:
        for s in SYSTEMS:
            rs = by[(s, f)]
            if not rs:
                out.append(f"| {f} | {s} | 0 | - | - | - | - |")
                continue
            oc = _cell([r["outage"]["first"] for r in rs])
            if not all(r["outage"]["ended"] for r in rs):
                oc = ">= " + oc
            elif not all(r["recovered_before_repair"] for r in rs) and any(r["outage"]["first_fail"] is not None
                                                                          for r in rs):
                oc += " *"
            lost = [len(r["lost"]) if r["lost"] is not None else
                    (len(r["lost_after_reset"]) if r.get("lost_after_reset") is not None else None) for r in rs]
            lost_s = "unreadable" if any(x is None for x in lost) else f"{sum(lost)} (of {sum(r['acked'] for r in rs)})"
            if any(r.get("read_note") for r in rs):
                lost_s += " ‡"
            elif any(r["lost"] is None for r in rs):
                lost_s += " †"
            w = [len(ow(r)) for r in rs]
            wlen = sum(b - a + 0.05 for r in rs for a, b in ow(r))
            out.append(f"| {f} | {s} | {len(rs)} | {oc} | {_cell([r['outage']['failing_total'] for r in rs])} "
                       f"| {lost_s} | {sum(w)}" + (f" ({wlen:.1f} s)" if sum(w) else "") + " |")

    notes = [f"{r['system']}, {r['fault']}, trial {r['trial']}: {r['read_note']}" for r in results
             if r.get("read_note")]
    if notes:
        out += [""] + [f"‡ {n}" for n in notes]
    out += ["", "† The service was not back at the end of the trial, so its acknowledged rows could not be "
            "read then; they were read after the next reset (\"unreadable\": not even then, or by a run "
            "that did not yet do that read; the next trial's read covers them).",
            "", f"\\* The service was not back until the bench repaired the fault ({CAP:.0f} s after it; "
            "SIGCONT, link up, isolation off): that outage lasts as long as the fault is left in place, "
            "the figure is set by the bench, not by the system.", "",
            "## Against the targets of issue 11", ""]
    for f in MILVUS_FAULTS:
        if f not in faults:
            continue
        h = [r["outage"]["first"] for r in by[("havip", f)]]
        k = [r["outage"]["first"] for r in by[("recipe", f)]]
        if h and k:
            ratio = statistics.median(h) / statistics.median(k)
            bound = "" if all(r["recovered_before_repair"] for r in by[("recipe", f)]) else \
                " at most (the recipe's outage ended only when the bench repaired the fault)"
            out.append(f"- {f}: havip's outage is {ratio:.2f} x the recipe's{bound} (median {statistics.median(h):.1f} s "
                       f"against {statistics.median(k):.1f} s): target <= 0.5: "
                       + ("**met**" if ratio <= 0.5 else "**missed**") + ".")
    hl = [r for r in results if r["system"] == "havip"]
    lost_h = sum(len(r["lost"] or r.get("lost_after_reset") or []) for r in hl)
    unread = sum(1 for r in hl if r["lost"] is None and r.get("lost_after_reset") is None)
    ov_h = sum(len(ow(r)) for r in hl)
    out.append(f"- havip, every fault: {lost_h} acknowledged rows lost"
               + (f" ({unread} trial(s) could not be read back)" if unread else "")
               + f", {ov_h} windows with two Milvus: target zero and zero: "
               + ("**missed**" if lost_h or ov_h else "**met where measured**" if unread else "**met**") + ".")
    out += ["- The recipe: its figures above, whatever they are (nothing in it was tuned).", "",
            "## Why", ""]
    out += findings(by, faults)
    out.append("")

    out += ["## What the client saw", "", "| fault | system | # | what the client saw |", "|---|---|---|---|"]
    for f in faults:
        for s in SYSTEMS:
            for r in by[(s, f)]:
                out.append(f"| {f} | {s} | {r['trial']} | {saw(r)} |")

    out += ["", "## Timelines", "",
            "The median trial of each fault, both systems on one time axis (seconds after the fault). "
            "Green/red: the client's searches succeed/fail; blue: the VIP on a host; gray: a Milvus "
            "container running (Docker's view); orange: a Milvus container running on both hosts at once; "
            "dashed: the bench's "
            "repair.", ""]
    for f, p in plots.items():
        out += [f"### {f}", "", f"![{f}: recipe and havip]({p})", ""]
    out += ["## Every trial", "", "s after the fault.", "",
            "| system | fault | # | first failed search | h1's Milvus stopped | VIP on h2 | h2's Milvus started "
            "| outage | repaired | trial end | acknowledged | lost | two-Milvus windows | replayed from (s old) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        o = r["outage"]
        m = marks(r)
        out.append(f"| {r['system']} | {r['fault']} | {r['trial']} | {_s(o['first_fail'])} | "
                   f"{_s(m['h1_stopped'])} | {_s(m['vip_h2'])} | {_s(m['h2_started'])} | "
                   f"{_s(o['first'])}{'' if o['ended'] else ' (not over)'} | "
                   f"{_s(r['t_repair'] - r['t0']) if r['t_repair'] else '-'} | {_s(r['t_end'] - r['t0'])} | "
                   f"{r['acked']} | {'-' if r['lost'] is None else len(r['lost'])} | "
                   + (", ".join(f"+{a - r['t0']:.1f}..+{b - r['t0'] + 0.05:.1f}" for a, b in ow(r))
                      or "none") + " | "
                   + (", ".join(f"{h}: {a:.1f}" for h, a in sorted((r.get("replayed_from") or {}).items())) or "-")
                   + " |")
    if info.get("errors"):
        out += ["", "Failed trials (not in the figures):", ""] + [f"- {e}" for e in info["errors"]]
    out += ["", f"Sampler over the whole run: {info.get('sampler', '-')}.", ""]
    return "\n".join(out)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def merge_dumps(dumps: list[dict]) -> tuple[list[dict], dict, dict]:
    """Several runs' dumps as one report's (results, info, meta): the trials side by side,
    each run's load, time and trial count kept in the header."""
    if len(dumps) == 1:
        return dumps[0]["results"], dumps[0]["info"], dumps[0]["meta"]
    results = [r for d in dumps for r in d["results"]]
    info = {**dumps[0]["info"], "errors": [e for d in dumps for e in d["info"].get("errors", [])]}
    meta = dict(dumps[-1]["meta"])
    ran = [f"{d['meta']['trials']} x {', '.join(d['meta']['faults'])} at {d['meta']['when']} (load "
           f"{d['meta']['load']})" for d in dumps]
    meta["load"] = "; ".join(ran)
    meta["trials"] = " / ".join(f"{d['meta']['trials']} --faults {','.join(str(FAULTS.index(f)) for f in d['meta']['faults'])}"
                                for d in dumps)
    meta["faults"] = [f for f in FAULTS if any(f in d["meta"]["faults"] for d in dumps)]
    meta["when"] = dumps[0]["meta"]["when"]
    return results, info, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--faults", default=None, help="comma-separated subset, by index 0-4 or name")
    ap.add_argument("--out", default=None, help="write the Markdown report here (docs/benchmarks-vs-recipe.md)")
    ap.add_argument("--json", default=None, help="also dump the raw trials as JSON here")
    ap.add_argument("--from-json", default=None, help="render the report from earlier --json dumps (comma-separated: "
                                                        "runs of other faults at the same commit, merged)")
    ap.add_argument("--keep-workdir", action="store_true")
    ap.add_argument("--serve", type=float, default=3.0, help="seconds of writes before each fault (3)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ", ".join(SYSTEMS))
    ap.add_argument("--milvus-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a Milvus setting (dotted milvus.yaml path) over the lab's, for both systems; repeatable")
    ap.add_argument("--checkpoint", choices=CHECKPOINTS, default="flushed",
                    help="flush once before each trial's writes (default), or leave the channel checkpoint aged")
    args = ap.parse_args()
    # A background run ignores SIGINT: SIGTERM takes the lab down as an interrupt would.
    signal.signal(signal.SIGTERM, _interrupt)
    faults = FAULTS
    if args.faults:
        faults = tuple(FAULTS[int(x)] if x.strip().isdigit() else x.strip() for x in args.faults.split(","))
    systems = tuple(x.strip() for x in args.systems.split(",") if x.strip())
    if not systems or set(systems) - set(SYSTEMS):
        sys.exit(f"--systems: {args.systems}: choose from {', '.join(SYSTEMS)}")
    settings: dict = {}
    for kv in args.milvus_set:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            sys.exit(f"--milvus-set: {kv}: expected KEY=VALUE")
        import yaml
        settings[key] = yaml.safe_load(value)
    if args.from_json:
        dumps = [json.loads(Path(f).read_text()) for f in args.from_json.split(",")]
        results, info, meta = merge_dumps([d for dump in dumps for d in dump.get("runs", [dump])])
        faults = tuple(meta["faults"])
    else:
        if os.geteuid() != 0:
            sys.exit("bench/vs_recipe.py needs root (namespaces, dockerd, keepalived)")
        from failover import _machine
        meta = {"machine": _machine(), "revision": mf._revision(),
                "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]), "trials": args.trials,
                "faults": list(faults), "checkpoint": args.checkpoint, "serve": args.serve,
                "systems": list(systems), "milvus_settings": settings, "commit": mf._git("rev-parse", "--short", "HEAD"),
                "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        def dump(results, info):
            if args.json:
                Path(args.json).write_text(json.dumps({"results": results, "info": info, "meta": meta},
                                                      indent=1, default=str))
        try:
            results, info = run(args.trials, faults, args.keep_workdir, dump, args.checkpoint, args.serve,
                                systems, settings)
        finally:
            meta["load"] += "; after it " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
        dump(results, info)
    plots = {}
    if args.out:
        out = Path(args.out)
        for i, f in enumerate(faults):
            name = f"{out.stem}-{re.sub(r'[^a-z]+', '-', f.lower()).strip('-')}.svg"
            if plot(results, f, out.parent / name):
                plots[f] = name
    revision = f"{meta['revision']} (HEAD {meta.get('commit', '?')})"
    report = render(results, info, meta["trials"], faults, meta["machine"], meta["load"], revision, plots,
                    meta.get("when") or (datetime.fromtimestamp(results[0]["t0"], timezone.utc)
                                         .strftime("%Y-%m-%d %H:%M UTC") if results else None))
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
        print(f"wrote {args.out}")
    if info.get("errors"):
        sys.exit(1)


if __name__ == "__main__":
    main()
