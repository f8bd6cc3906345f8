"""Slow work never delays an advert: a Docker engine that accepts connections and never
answers, and a Milvus port that never answers, while havip is master at 0.1 s adverts.

This asserts behaviour, not speed: a loop blocked by a Docker call would miss adverts for
the call's whole timeout (seconds); the bound below is three times the interval.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path

import havip.lab.sniff
from havip.lab.havipd import Havipd, vrrp_config

SNIFF = Path(havip.lab.sniff.__file__)


class _Hung:
    """A Unix socket that accepts connections and never says a word."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_hung_docker_and_milvus_do_not_delay_adverts(topology, tmp_path):
    h1, h2 = topology.add_host("h1", 11), topology.add_host("h2", 21)
    hung = _Hung(tmp_path / "docker.sock")
    cfg = vrrp_config(priority=110, vips=["198.18.0.50/24"], version=3, interval=0.1)
    cfg["milvus"] = {"container": "milvus", "docker": f"unix://{tmp_path / 'docker.sock'}",
                     "grpc": "127.0.0.1:1", "check_interval": 0.2, "check_timeout": 0.5,
                     "start_timeout": 5, "stop_timeout": 1, "rise": 1, "fall": 1}
    d1 = Havipd(h1, cfg, tmp_path)
    try:
        d1.start()
        d1.wait_state("master", timeout=15)
        sniff = h2.run(sys.executable, str(SNIFF), "eth0", "6", timeout=30)
        seen = [(t, src, prio) for t, src, prio in json.loads(sniff.stdout) if src == h1.addr]
        assert len(seen) > 20, f"too few adverts: {sniff.stdout[:200]} {sniff.stderr[-500:]}"
        gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
        assert max(gaps) < 0.3, f"an advert was late by {max(gaps):.3f}s while Docker hung"
        # And the daemon says why Milvus is not serving, instead of hanging with it.
        d1.wait_event(lambda e: "Docker engine" in str(e.get("reason", "")) or "Docker engine" in str(e.get("error", "")),
                      timeout=20, what="a reason naming the hung Docker engine")
    finally:
        d1.kill()
        hung.close()
