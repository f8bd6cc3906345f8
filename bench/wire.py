"""What a lab client sees on its link during a takeover, with kernel timestamps.

python bench/wire.py IFACE SECONDS VIP PORT: an AF_PACKET socket on IFACE (the client's
namespace) records, with the kernel's receive/transmit timestamp (SO_TIMESTAMPNS), every
VRRP advert (source, priority), every ARP frame about VIP (op, sender MAC), every TCP SYN
the client sends to VIP:PORT (destination MAC) and every SYN-ACK that answers (source
MAC). Prints one JSON list of [seconds, kind, fields...] at the end. All times are on
one clock (the kernel's packet stamps), so differences between them do not depend on
how late this process was scheduled. Lab namespaces only.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
PACKET_OUTGOING = 4


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def classify(frame: bytes, vip: str, port: int) -> list | None:
    """The record for one Ethernet frame (without its time), or None if it is not one we want."""
    if len(frame) < 14:
        return None
    etype = struct.unpack_from("!H", frame, 12)[0]
    if etype == 0x0806 and len(frame) >= 42:
        op = struct.unpack_from("!H", frame, 20)[0]
        spa, tpa = socket.inet_ntoa(frame[28:32]), socket.inet_ntoa(frame[38:42])
        if vip in (spa, tpa):
            return ["arp", op, _mac(frame[22:28]), spa, tpa]
        return None
    if etype != 0x0800 or len(frame) < 34:
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
    body = 14 + ihl
    if proto == 112 and len(frame) >= body + 3:
        return ["vrrp", src, frame[body + 2], _mac(frame[6:12])]
    if proto == 6 and len(frame) >= body + 14:
        sport, dport = struct.unpack_from("!HH", frame, body)
        flags = frame[body + 13]
        if dst == vip and dport == port and flags & 0x12 == 0x02:
            return ["syn", _mac(frame[0:6])]
        if src == vip and sport == port and flags & 0x12 == 0x12:
            return ["synack", _mac(frame[6:12])]
    return None


def capture(ifname: str, seconds: float, vip: str, port: int) -> list[list]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    print("listening", file=sys.stderr, flush=True)
    out: list[list] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if not select.select([s], [], [], min(left, 0.2))[0]:
            continue
        while True:
            try:
                frame, anc, _flags, addr = s.recvmsg(2048, socket.CMSG_SPACE(16))
            except BlockingIOError:
                break
            rec = classify(frame, vip, port)
            if rec is None:
                continue
            stamp = next((struct.unpack("qq", v[:16]) for lvl, kind, v in anc
                          if lvl == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
            t = stamp[0] + stamp[1] / 1e9 if stamp else time.time()
            out.append([t, *rec, addr[2] == PACKET_OUTGOING])
    s.close()
    return out


def main() -> None:
    ifname, seconds, vip, port = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    print(json.dumps(capture(ifname, seconds, vip, port)), flush=True)


if __name__ == "__main__":
    main()
