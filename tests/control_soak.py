"""Control-socket soak: the real Daemon loop (VRRPv3, 0.1 s adverts, over tests/fakes.py)
with the real ControlServer in its own process, under bursts of 1,000 concurrent
`status`, slow clients (a byte every 3.9 s), held idle connections and garbage.

    python -m tests.control_soak SECONDS [RTPRIO]   # prints the figures as JSON

The daemon is configured as production with sub-second adverts is (`realtime_priority`,
0 = off, for comparison) and runs through `Daemon.run()`, which applies it to the loop
thread before any worker starts, exactly as `havip run` does.

The daemon process runs with RLIMIT_NOFILE 1024 and, every 50 ms on the loop thread,
opens a pipe and a file as the loop's own adapters would: any EMFILE there is counted.
Advert lateness is the loop's own measure (`Daemon.lateness`: send time minus deadline).
"""

from __future__ import annotations

import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time

SOCK_NAME = "soak.sock"


def _daemon(sock_path: str, seconds: float, rtprio: int = 0) -> None:
    import structlog

    from havip import config
    from havip.control.server import ControlServer
    from havip.daemon.loop import Adapters, Daemon
    from tests.fakes import FakeAnnouncer, FakeLink, FakeSocket, FakeVips

    if os.environ.get("SOAK_NICE"):
        os.nice(int(os.environ["SOAK_NICE"]))       # as a unit's Nice= would
    if os.environ.get("SOAK_SWITCH"):
        sys.setswitchinterval(float(os.environ["SOAK_SWITCH"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())     # quiet
    cfg = config.parse({"interface": "eth0", "virtual_router_id": 51, "priority": 110, "version": 3,
                        "advert_interval": 0.1, "virtual_ipaddresses": ["198.18.0.50/24"],
                        "realtime_priority": rtprio}, default_instance="soak")
    sock = FakeSocket()
    ad = Adapters(make_socket=lambda: sock, vips=FakeVips(), announcer=FakeAnnouncer(), link=FakeLink())
    d = Daemon(cfg, ad, log=structlog.get_logger("soak"))
    srv = ControlServer(sock_path, d, log=d.log, group=None)
    fd_errors, lateness, stop = [0], [], threading.Event()

    def own_fds():          # what the loop itself opens: sockets, pipes, the lease file
        try:
            r, w = os.pipe()
            os.close(r)
            os.close(w)
            with open(os.devnull, "rb"):
                pass
        except OSError:
            fd_errors[0] += 1

    def driver():
        while not stop.wait(0.05):
            d.call(own_fds)
            lateness.extend(d.lateness)
            d.lateness.clear()

    threading.Thread(target=driver, daemon=True).start()
    threading.Timer(seconds, d.request_stop).start()
    d.run()
    stop.set()
    counters = getattr(srv, "counters", None)
    srv.close()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    lateness.sort()
    q = lambda p: round(lateness[min(len(lateness) - 1, int(p * len(lateness)))] * 1000, 3) if lateness else None
    print(json.dumps({"adverts": len(lateness), "lateness_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
                      "loop_fd_errors": fd_errors[0],
                      "scheduling": d.scheduling.view() if d.scheduling else None, "control_counters": counters,
                      "daemon_cpu_s": round(cpu.ru_utime + cpu.ru_stime, 2)}))


def _status(path: str, timeout: float = 10.0) -> bool:
    from havip.control import client

    try:
        return client.request(path, {"cmd": "status"}, timeout)["status"]["state"] == "master"
    except Exception:  # noqa: BLE001 - counted by the caller
        return False


def soak(seconds: float, workdir: str, only: tuple[str, ...] | None = None, attacker_nice: int = 0,
         realtime_priority: int = 10) -> dict:
    """Run the daemon process and the attackers for `seconds`; return the figures.

    `only`: a subset of monitor, bursts, slow, held, garbage (("monitor",) is the baseline).
    `attacker_nice`: the attackers (this process) run that much nicer than the daemon
    (needs root to undo afterwards), to tell the daemon's own cost from CPU competition.
    `realtime_priority`: the daemon's config key (10 as production with 0.1 s adverts; 0 = off).
    """
    path = os.path.join(workdir, SOCK_NAME)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "tests.control_soak", "--daemon", path, str(seconds),
                             str(realtime_priority)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    niced = os.nice(attacker_nice) if attacker_nice else None     # after the daemon started: it keeps its own
    try:
        deadline = time.monotonic() + 15
        while not _status(path, 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        stats = {"bursts": 0, "burst_ok": 0, "burst_failed": 0, "monitor_ok": 0, "monitor_failed": 0,
                 "slow_closed": 0, "slow_open_longest_s": 0.0, "garbage_sent": 0}
        end = time.monotonic() + seconds - 2
        attackers = (_monitor, _bursts, _slow, _held, _garbage)
        only = only or (tuple(os.environ["SOAK_ONLY"].split(",")) if os.environ.get("SOAK_ONLY") else None)
        if only:
            attackers = tuple(f for f in attackers if f.__name__.strip("_") in only)
        threads = [threading.Thread(target=f, args=(path, end, stats), daemon=True) for f in attackers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 30)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if niced is not None:
            try:
                os.nice(-attacker_nice)
            except OSError:
                pass
    stats["load_average"] = os.getloadavg()
    stats["daemon"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    stats["daemon_stderr_traceback"] = "Traceback" in err
    stats["daemon_exit"] = proc.returncode
    return stats


def _monitor(path, end, stats):
    while time.monotonic() < end:
        stats["monitor_ok" if _status(path, 5) else "monitor_failed"] += 1
        time.sleep(0.5)


def _bursts(path, end, stats):
    while time.monotonic() < end:
        results: list[bool] = []
        threads = [threading.Thread(target=lambda: results.append(_status(path, 20))) for _ in range(1000)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stats["bursts"] += 1
        stats["burst_ok"] += sum(results)
        stats["burst_failed"] += 1000 - sum(results)
        time.sleep(max(0.0, min(8.0, end - time.monotonic())))


def _slow(path, end, stats):
    """50 clients sending one byte every 3.9 s: each must be closed within the 5 s deadline."""
    def one():
        while time.monotonic() < end:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            t0 = time.monotonic()
            try:
                s.connect(path)
                while time.monotonic() < end + 10:
                    s.send(b"{")
                    s.settimeout(3.9)
                    try:
                        if s.recv(4096) is not None:
                            break            # answered (timeout) or closed
                    except TimeoutError:
                        continue
            except OSError:
                pass
            finally:
                s.close()
            took = time.monotonic() - t0
            stats["slow_closed"] += 1
            stats["slow_open_longest_s"] = max(stats["slow_open_longest_s"], round(took, 2))
    threads = [threading.Thread(target=one, daemon=True) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _held(path, end, stats):
    """300 connections that never send, reopened as the server closes them."""
    socks = []
    while time.monotonic() < end:
        socks = [s for s in socks if s.fileno() >= 0]
        while len(socks) < 300:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(path)
            except OSError:
                s.close()
                break
            socks.append(s)
        time.sleep(0.5)
        for s in list(socks):
            try:
                if s.recv(4096, socket.MSG_PEEK) == b"":
                    s.close()
            except BlockingIOError:
                pass
            except OSError:
                s.close()
    for s in socks:
        s.close()


def _garbage(path, end, stats):
    rng = random.Random(9)
    while time.monotonic() < end:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(6)
                s.connect(path)
                s.sendall(rng.randbytes(rng.randint(1, 300)) + b"\n")
                s.recv(4096)
                stats["garbage_sent"] += 1
        except OSError:
            pass


if __name__ == "__main__":
    if sys.argv[1] == "--daemon":
        _daemon(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            rt = int(sys.argv[2]) if len(sys.argv) > 2 else 10
            print(json.dumps(soak(float(sys.argv[1]), d, realtime_priority=rt), indent=2))
