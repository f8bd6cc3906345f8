"""Run havip's network adapters inside a host's namespace, driven by the test.

The test process stays in the root namespace; `Agent(host)` starts
`python -m tests.integration.nsagent` in the host's namespace and calls adapter methods
there over a JSON-lines pipe, so objects (a socket, a monitor) live across calls:

    agent.new("s", "AdvertSocket", "eth0", 4)
    agent.call("s", "send", b"...")
    agent.call("s", "wait", 2.0)  -> {"payload": b"...", "src": ..., "dst": ..., "ttl": 255}

bytes travel as {"hex": "..."}; dataclasses as dicts; an exception comes back as
AgentError carrying the remote type name and message.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _encode(value):
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"hex"}:
            return bytes.fromhex(value["hex"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class AgentError(Exception):
    def __init__(self, kind: str, message: str):
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


class Agent:
    """The test side: one agent process per host."""

    def __init__(self, host, *, prefix: list[str] = ()):
        """`prefix` wraps the agent, e.g. setpriv to run it without capabilities."""
        self.host = host
        self.proc = host.popen([*prefix, sys.executable, "-m", "tests.integration.nsagent"], cwd=REPO,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.call_raw("ping")   # the imports are done and the agent answers

    def call_raw(self, op: str, **kw):
        self.proc.stdin.write(json.dumps({"op": op, **_encode(kw)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AgentError("AgentDied", f"agent in {self.host.ns} exited ({self.proc.poll()})")
        reply = json.loads(line)
        self.elapsed = reply.get("elapsed")
        if not reply["ok"]:
            raise AgentError(reply["kind"], reply["message"])
        return _decode(reply["result"])

    def new(self, name: str, cls: str, *args, **kwargs):
        return self.call_raw("new", name=name, cls=cls, args=list(args), kwargs=kwargs)

    def call(self, name: str, method: str, *args, **kwargs):
        return self.call_raw("call", name=name, method=method, args=list(args), kwargs=kwargs)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(10)


# ---------------------------------------------------------------- the agent side


class PacketTap:
    """Captures every frame on an interface (an AF_PACKET receiver, like tcpdump)."""

    def __init__(self, ifname: str):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.05)

    def frames(self, wait: float = 0.5) -> list[bytes]:
        out, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                out.append(self.sock.recv(65535))
            except TimeoutError:
                if out:
                    break
        return out

    def close(self) -> None:
        self.sock.close()


def _classes():
    from havip.net.garp import Announcer
    from havip.net.link import LinkMonitor
    from havip.net.sock import AdvertSocket
    from havip.net.vip import VipManager

    def vip_manager(ifname, vips):
        return VipManager(ifname, [ipaddress.ip_interface(v) for v in vips])

    def etcd_lease(*args, **kwargs):
        from havip.runtime.etcdlease import EtcdLease

        lease = EtcdLease(*args, **kwargs)
        lease.lost = []                               # on_lost calls, with when (the test reads them)
        lease.on_lost = lambda reason, lease_id=None: lease.lost.append({"reason": reason, "at": time.monotonic()})
        return lease

    return {"VipManager": vip_manager, "AdvertSocket": AdvertSocket, "Announcer": Announcer,
            "LinkMonitor": LinkMonitor, "PacketTap": PacketTap, "EtcdLease": etcd_lease}


def serve() -> None:
    classes, objects = _classes(), {}
    for line in sys.stdin:
        req = _decode(json.loads(line))
        start = time.perf_counter()
        try:
            if req["op"] == "ping":
                result = os.getpid()
            elif req["op"] == "new":
                objects[req["name"]] = classes[req["cls"]](*req["args"], **req["kwargs"])
                result = None
            else:
                attr = getattr(objects[req["name"]], req["method"])   # a method or a property
                result = attr(*req["args"], **req["kwargs"]) if callable(attr) else attr
            reply = {"ok": True, "result": _encode(result)}
        except Exception as exc:  # noqa: BLE001 - the test asserts on the type and message
            reply = {"ok": False, "kind": type(exc).__name__, "message": str(exc)}
        reply["elapsed"] = time.perf_counter() - start
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    for obj in objects.values():
        obj.close()


if __name__ == "__main__":
    serve()
