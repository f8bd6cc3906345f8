"""The lab's advert sniffer ends on SIGINT even when started with SIGINT ignored.

A shell without job control starts background commands with SIGINT ignored, and Python
then installs no KeyboardInterrupt handler: the e2e tests' `adverts()` (SIGINT, then wait
for the JSON list) timed out in a CI run started that way. The sniffer listens in a
private network namespace of its own (unshare --net), on its loopback: nothing is sent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.conftest import require_root


def test_sniffer_answers_sigint_even_when_started_with_it_ignored():
    require_root()
    proc = subprocess.Popen(
        ["unshare", "--net", "--", sys.executable, "-m", "havip.lab.sniff", "lo", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert proc.stderr.readline().strip() == "listening"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert json.loads(out) == []
    finally:
        proc.kill()
        proc.wait(10)
