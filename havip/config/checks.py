"""Checks across fields: settings that are each valid but wrong together.

Each check takes a dict of validated top-level values, which may be partial (only
the fields that passed their own validation), and yields `(path, value, reason)`.
A check whose inputs are missing stays silent, so one bad field does not hide the
problems of the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Problem = tuple[str, Any, str]          # (path, value, reason)


def _check_interval(v: dict) -> Iterator[Problem]:
    if "version" not in v or "advert_interval" not in v:
        return
    interval = v["advert_interval"]
    if v["version"] == 2 and interval != int(interval):
        yield "advert_interval", interval, "VRRPv2 carries whole seconds; use version: 3 for sub-second adverts"
    elif v["version"] == 3 and interval > 40.95:
        yield "advert_interval", interval, "VRRPv3 carries at most 40.95 seconds (RFC 5798 5.2.7)"
    elif v["version"] == 3 and abs(interval * 100 - round(interval * 100)) > 1e-6:
        yield "advert_interval", interval, "VRRPv3 carries centiseconds; use a multiple of 0.01"


def _check_addresses(v: dict) -> Iterator[Problem]:
    vips = v.get("virtual_ipaddresses")
    if not vips:
        return
    family = vips[0].version
    if family == 6 and v.get("version") == 2:
        yield "version", 2, "VRRPv2 is IPv4 only; use version: 3 for IPv6 addresses"
    seen: dict[object, int] = {}
    for i, vip in enumerate(vips):
        path = f"virtual_ipaddresses.{i}"
        if vip.version != family:
            yield path, str(vip), (f"is IPv{vip.version} but virtual_ipaddresses.0 is IPv{family}; "
                                   "put each family in its own instance")
        elif vip.ip in seen:
            yield path, str(vip), f"same address as virtual_ipaddresses.{seen[vip.ip]}"
        seen.setdefault(vip.ip, i)


def _check_unicast(v: dict) -> Iterator[Problem]:
    uni = v.get("unicast")
    if uni is None:
        return
    vips = v.get("virtual_ipaddresses") or []
    family = vips[0].version if vips else None
    vip_ips = {vip.ip for vip in vips}
    named = [("unicast.source", uni.source)] if uni.source else []
    named += [(f"unicast.peers.{i}", p) for i, p in enumerate(uni.peers)]
    seen: dict[object, str] = {}
    for path, ip in named:
        if family and ip.version != family:
            yield path, str(ip), f"is IPv{ip.version} but the virtual addresses are IPv{family}"
        elif ip in vip_ips:
            yield path, str(ip), "is a virtual address; use the host's own address"
        elif (net := _subnet_edge(ip, vips)) is not None:
            yield path, str(ip), net
        elif ip in seen:
            again = "is unicast.source itself; list only the other hosts" if seen[ip] == "unicast.source" \
                else f"same address as {seen[ip]}"
            yield path, str(ip), again
        seen.setdefault(ip, path)


def _subnet_edge(ip, vips) -> str | None:
    """Why `ip` is the network or broadcast address of a VIP's subnet (None if it is not)."""
    for vip in vips:
        net = vip.network
        if ip.version != vip.version or net.num_addresses <= 2 or ip not in net:
            continue
        if ip == net.network_address:
            return f"is the network address of {net} (the subnet of {vip}); use a host address"
        if ip.version == 4 and ip == net.broadcast_address:
            return f"is the broadcast address of {net} (the subnet of {vip}); use a host address"
    return None


def _check_auth(v: dict) -> Iterator[Problem]:
    auth = v.get("authentication")
    if auth is None:
        return
    if auth.type == "pass" and v.get("version") == 3:
        yield "authentication.type", "pass", "VRRPv3 has no authentication (RFC 5798 9); use version: 2 or remove it"
    elif auth.type == "pass" and not auth.password:
        yield "authentication.password", "", "required when authentication.type is pass"
    elif auth.type == "none" and auth.password:
        yield "authentication.password", auth.password, "is ignored unless authentication.type is pass"


def _check_preempt(v: dict) -> Iterator[Problem]:
    if v.get("preempt") is not False:
        return
    if v.get("priority") == 255:
        # RFC 5798 6.4.3: the owner always takes over; keepalived silently resets nopreempt.
        yield "preempt", False, "the address owner (priority 255) always preempts; use priority 254 or less"
    if v.get("preempt_delay"):
        yield "preempt_delay", v["preempt_delay"], "has no effect with preempt: false"


def _check_checksum(v: dict) -> Iterator[Problem]:
    if v.get("checksum") != "message":
        return
    vips = v.get("virtual_ipaddresses")
    if v.get("version") == 2 or (vips and vips[0].version == 6):
        yield "checksum", "message", "only applies to VRRPv3 over IPv4"


_CROSS_CHECKS = (_check_interval, _check_addresses, _check_unicast, _check_auth,
                 _check_preempt, _check_checksum)


def cross_checks(values: dict) -> list[Problem]:
    """Checks across fields, on whichever top-level fields are valid on their own."""
    return [p for check in _CROSS_CHECKS for p in check(values)]
