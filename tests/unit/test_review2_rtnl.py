"""Review of the pre-encoded VIP requests on the kept-open rtnetlink socket (merge of vipms):
a socket error or a lost ack fails that request with its reason, the daemon counts it, and
the socket serves the next request (a late ack of the lost one is skipped). The socket is
a fake: nothing reaches the kernel."""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque

import pytest

from havip.errors import AdapterError
from havip.net.vip import VipManager

NLMSG_ERROR = 2


def _ack(seq: int, code: int) -> bytes:
    return struct.pack("=IHHII", 36, NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", -code) + bytes(16)


class UnkindNetlink:
    """Answers each request with an ack, except for the faults queued in `faults`:
    "send" (send raises ENOBUFS), "lost" (the ack comes late: after the next request)."""

    def __init__(self):
        self.faults: deque[str] = deque()
        self.inbox: deque[bytes] = deque()
        self.late: list[bytes] = []
        self.sent = 0

    def send(self, buf) -> int:
        fault = self.faults.popleft() if self.faults else None
        if fault == "send":
            raise OSError(errno.ENOBUFS, "No buffer space available")
        seq = struct.unpack_from("=I", bytes(buf), 8)[0]
        self.sent += 1
        if fault == "lost":
            self.late.append(_ack(seq, 0))
        else:
            self.inbox.append(b"".join(self.late) + _ack(seq, 0))
            self.late = []
        return len(buf)

    def recv(self, _n: int) -> bytes:
        if not self.inbox:
            raise socket.timeout("timed out")
        return self.inbox.popleft()

    def close(self) -> None:
        pass


@pytest.fixture
def vips():
    vm = VipManager("lo", ["198.18.0.50/24", "198.18.0.51/24"])
    real, vm._rtnl._sock = vm._rtnl._sock, UnkindNetlink()
    try:
        yield vm
    finally:
        real.close()
        vm.close()


@pytest.mark.parametrize("fault", ["send", "lost"])
def test_a_fault_fails_that_vip_only_and_the_socket_serves_the_next_request(vips, fault):
    """"send": send() raises ENOBUFS; "lost": the ack comes only with the next request's,
    which must not be taken for that one's answer."""
    vips._rtnl._sock.faults.append(fault)
    with pytest.raises(AdapterError) as err:
        vips.add()
    assert "cannot add 198.18.0.50/24 on lo: " in str(err.value) and "(added 198.18.0.51/24)" in str(err.value)
    assert vips.remove() == ["198.18.0.50/24", "198.18.0.51/24"]
