"""Record when VRRP adverts arrive on an interface: python -m havip.lab.sniff IFACE SECONDS.

Prints one JSON list of [monotonic time, source, priority] per advert, at the end or on
SIGINT (a caller that does not know how long to listen). Lab namespaces only.
"""

import json
import signal
import sys
import time

from havip.model import Advert
from havip.net.sock import AdvertSocket
from havip.protocol import codec


def main() -> None:
    ifname, seconds = sys.argv[1], float(sys.argv[2])
    # A caller started in the background by a shell without job control hands us SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler: the caller's SIGINT
    # would be lost and its wait for our list time out. Take SIGINT (and SIGTERM) ourselves.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sock = AdvertSocket(ifname, 4)
    print("listening", file=sys.stderr, flush=True)      # callers may wait for this line
    end = time.monotonic() + seconds
    seen = []
    try:
        while (left := end - time.monotonic()) > 0:
            pkt = sock.wait(left)
            if pkt is None:
                continue
            adv = codec.decode(pkt.payload, src=pkt.src, dst=pkt.dst, ttl=pkt.ttl, family=4)
            if isinstance(adv, Advert):
                seen.append([time.monotonic(), pkt.src, adv.priority])
    except KeyboardInterrupt:
        pass
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
