"""The hostile host's flood tool: fuzzed VRRP adverts and peer beacons, paced, seeded.

Run inside a lab namespace only (it sends raw IPv4 on the interface it is given):

    python flood.py --iface eth0 --src 198.18.0.99 --spoof 198.18.0.21 --advert HEX --version 2 \
        --vrid 51 --adverts 10000 --beacons 10000 --rate 5000 --seed 1 [--peers A,B]

Adverts are mutants of --advert (a valid advert of the pair): bits, bytes, lengths,
counts of up to 255 addresses, versions, VRIDs, intervals, passwords; most get a
correct checksum so they reach the receive checks. A mutant that could pass every
check gets a priority of 1-90, below both hosts' (91 and 110), so that whatever the
pair accepts cannot rightly change the election: any transition is a bug. The issue's
repro packets go first. Beacons are forgeries (the flood has no key): signed with a
wrong key, unsigned, nested, truncated, from spoofed sources, with TTL 255 and not.
Prints one JSON line: what was sent.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import socket
import struct
import sys
import time

GROUP = "224.0.0.18"
BEACON_PORT = 11259
INTERESTING = (0, 1, 2, 3, 0x0F, 0x10, 0x21, 0x31, 0x64, 0x65, 0x7F, 0x80, 0xFE, 0xFF)


def csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fix_checksum(p: bytearray, src: str, dst: str, pseudo: bool) -> None:
    if len(p) < 8:
        return
    p[6:8] = b"\0\0"
    data = bytes(p)
    if p[0] >> 4 == 3 and pseudo:
        data = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 112, len(p)) + data
    p[6:8] = struct.pack("!H", csum(data))


def ip_packet(src: str, dst: str, proto: int, ttl: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, ttl, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header + payload          # the kernel fills in the header checksum


def udp(src: str, dst: str, ttl: int, data: bytes) -> bytes:
    seg = struct.pack("!HHHH", 40000, BEACON_PORT, 8 + len(data), 0) + data     # UDP checksum 0: none
    return ip_packet(src, dst, 17, ttl, seg)


def mutate_advert(base: bytes, rng: random.Random, version: int, vrid: int) -> bytearray:
    p = bytearray(base)
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        op = rng.randrange(9)
        if op == 0 and p:
            p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        elif op == 1 and p:
            p[rng.randrange(len(p))] = rng.choice(INTERESTING)
        elif op == 2 and p:
            del p[rng.randrange(len(p) + 1):]
        elif op == 3:
            p += rng.randbytes(rng.choice((1, 4, 8, 64)))
        elif op == 4 and len(p) >= 8:
            tail = p[8 + p[3] * 4:] if p[0] >> 4 == 2 else b""
            count = rng.choice((0, 1, 2, 100, 101, 200, 255, rng.randrange(256)))
            p[3] = count
            p[8:] = rng.randbytes(count * 4) if rng.random() < 0.5 else bytes(count * 4)
            p += tail
        elif op == 5 and p:
            p[0] = (rng.choice((2, 3, 0, 15)) << 4) | rng.choice((1, 1, 0, 2))
        elif op == 6 and len(p) > 1:
            p[1] = rng.choice((vrid, vrid, 0, 255, rng.randrange(256)))
        elif op == 7 and len(p) > 5:
            p[4:6] = rng.randbytes(2)
        elif op == 8 and len(p) >= 16 and p[0] >> 4 == 2:
            p[-8:] = rng.choice((b"1111", b"guess", b"")).ljust(8, b"\0")
    if len(p) >= 3 and p[1] == vrid and p[0] >> 4 == version:
        p[2] = rng.randint(1, 90)      # could pass the checks: keep it below both hosts
    return p


def beacon_mutant(rng: random.Random, src: str, vrid: int) -> bytes:
    body: dict = {"from": src, "ts": time.time(), "instance": "evil", "vrid": vrid, "state": "backup",
                  "priority": 200, "healthy": True, "paused": False, "container": "stopped"}
    op = rng.randrange(7)
    if op == 1:
        body[rng.choice(list(body))] = rng.choice((None, 0, -1, "x" * 70, "a\nstate: master", [], {}))
    elif op == 2:
        del body[rng.choice(list(body))]
    raw = json.dumps(body, separators=(",", ":")).encode()
    if op == 3:
        return rng.choice((b"[" * 1000, b"{" * 400, rng.randbytes(rng.randrange(1, 600))))
    if op == 4:   # the repro: the old format, no `healthy`, no `container`
        return b'{"havip":1,"instance":"a","vrid":51,"state":"backup","priority":1,"paused":false}'
    mac = hmac.new(b"a-guessed-key-a-guessed-key", b"HVB2" + raw, hashlib.sha256).digest()
    data = b"HVB2" + (mac if op != 5 else bytes(32)) + raw
    if op == 6:
        data = bytearray(data)
        data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data[:rng.randrange(1, len(data) + 1)])
    return data


def repro_packets(src: str) -> list[bytes]:
    v2 = bytes.fromhex("21636465010116d4") + bytes(404) + bytes.fromhex("3131313100000000")
    v3 = bytearray(bytes.fromhex("31636465000a0000") + bytes(404))
    fix_checksum(v3, src, GROUP, True)
    return [v2, bytes(v3)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--spoof", default="")
    ap.add_argument("--peers", default="")
    ap.add_argument("--advert", required=True)
    ap.add_argument("--version", type=int, default=2)
    ap.add_argument("--vrid", type=int, default=51)
    ap.add_argument("--adverts", type=int, default=10_000)
    ap.add_argument("--beacons", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    base = bytes.fromhex(a.advert)
    sources = [a.src] + [s for s in a.spoof.split(",") if s]
    peers = [p for p in a.peers.split(",") if p]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, a.iface.encode())
    sent = {"repro": 0, "adverts": 0, "beacons": 0, "errors": 0}

    def send(pkt: bytes, dst: str) -> None:
        try:
            s.sendto(pkt, (dst, 0))
        except OSError:
            sent["errors"] += 1      # ENOBUFS under load: counted, the flood goes on

    for _ in range(50):
        for p in repro_packets(a.src):
            send(ip_packet(a.src, GROUP, 112, 255, p), GROUP)
            sent["repro"] += 1
    total = a.adverts + a.beacons
    kinds = ["advert"] * a.adverts + ["beacon"] * a.beacons
    rng.shuffle(kinds)
    t0 = time.monotonic()
    for i, kind in enumerate(kinds):
        src = rng.choice(sources)
        ttl = rng.choice((255, 255, 255, 64, 1))
        if kind == "advert":
            p = mutate_advert(base, rng, a.version, a.vrid)
            if rng.random() < 0.7:
                fix_checksum(p, src, GROUP, pseudo=rng.random() < 0.8)
            send(ip_packet(src, GROUP, 112, ttl, bytes(p)), GROUP)
            sent["adverts"] += 1
        else:
            dst = rng.choice([GROUP, GROUP, *peers])
            send(udp(src, dst, ttl, beacon_mutant(rng, src, a.vrid)), dst)
            sent["beacons"] += 1
        ahead = (i + 1) / a.rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    sent["seconds"] = round(time.monotonic() - t0, 2)
    sent["total"] = total
    json.dump(sent, sys.stdout)
    print()


if __name__ == "__main__":
    main()
