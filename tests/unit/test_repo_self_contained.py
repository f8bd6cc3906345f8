"""A clone must not depend on anything beside it: no file reads the shared folder next to the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PATTERN = re.compile(r"""\.\./shared|parent\s*/\s*["']shared["']|parents\[\d\]\.parent""")


def test_no_file_reads_the_shared_folder_beside_the_repository():
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        if not name.endswith((".py", ".sh", "Makefile", ".toml", ".cfg", ".ini")) and name != ".ci/run":
            continue
        path = REPO / name
        if path.is_file() and path.name != Path(__file__).name and PATTERN.search(path.read_text(errors="replace")):
            offenders.append(name)
    assert offenders == []


def test_the_keepalived_captures_are_in_the_repository():
    from tests.unit import vectors

    assert vectors.KEEPALIVED.is_relative_to(REPO)
    assert sorted(p.name for p in vectors.KEEPALIVED.glob("*.pcap")) == [
        "keepalived-v2-auth-pass.pcap", "keepalived-v2-unicast-auth.pcap",
        "keepalived-v3-10cs.pcap", "keepalived-v3-ipv6.pcap"]
