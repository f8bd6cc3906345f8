"""Client-side probe: a TCP connect to VIP:PORT every PERIOD seconds for DURATION seconds.

Runs inside the lab's client namespace. Prints one JSON object: the monotonic times of
the successful connects (CLOCK_MONOTONIC is shared by all namespaces, so the benchmark
can line them up with the moment it injected the fault).
"""

import json
import socket
import sys
import time


def main() -> None:
    vip, port, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    period = float(sys.argv[4]) if len(sys.argv) > 4 else 0.01
    ok: list[float] = []
    attempts = 0
    start = time.monotonic()
    nxt = start
    print(json.dumps({"ready": start}), flush=True)
    while (now := time.monotonic()) < start + duration:
        attempts += 1
        s = socket.socket()
        s.settimeout(period)
        try:
            s.connect((vip, port))
            ok.append(now)
        except OSError:
            pass
        finally:
            s.close()
        nxt += period
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            nxt = time.monotonic()
    print(json.dumps({"ok": ok, "attempts": attempts, "start": start}), flush=True)


if __name__ == "__main__":
    main()
