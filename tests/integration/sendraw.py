"""Send crafted IPv4 packets (hex on argv) out of an interface: the hostile host's tool.

Run inside a lab namespace only: python sendraw.py IFACE HEX [HEX ...]
"""

import socket
import sys


def main() -> None:
    ifname, packets = sys.argv[1], sys.argv[2:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    for hexed in packets:
        pkt = bytes.fromhex(hexed)
        dst = socket.inet_ntoa(pkt[16:20]) if len(pkt) >= 20 else "224.0.0.18"
        s.sendto(pkt, (dst, 0))


if __name__ == "__main__":
    main()
