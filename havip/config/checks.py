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


def _check_lease(v: dict) -> Iterator[Problem]:
    milvus = v.get("milvus")
    if milvus is None or not milvus.lease.enabled:
        return
    from havip.config.schema import ETCD_ONLY, FILE_ONLY

    lease, at = milvus.lease, "milvus.lease"
    other = FILE_ONLY if lease.backend == "etcd" else ETCD_ONLY
    for name in sorted(lease.model_fields_set & set(other)):
        yield f"{at}.{name}", getattr(lease, name), f"is for backend: {'file' if name in FILE_ONLY else 'etcd'}"
    if lease.backend != "etcd":
        return
    yield from _check_etcd(lease, milvus, at)


def _check_etcd(lease, milvus, at: str) -> Iterator[Problem]:
    if not lease.endpoints:
        yield f"{at}.endpoints", [], "required with backend: etcd (e.g. [https://10.0.0.5:2379, ...])"
    schemes = {e.split(":", 1)[0] for e in lease.endpoints}
    if len(schemes) > 1:
        yield f"{at}.endpoints", lease.endpoints, "mixes http and https; use one scheme"
    for name in ("ca", "cert", "key"):
        if getattr(lease, name) and schemes == {"http"}:
            yield f"{at}.{name}", getattr(lease, name), "needs https:// endpoints"
    if bool(lease.cert) != bool(lease.key):
        missing = "key" if lease.cert else "cert"
        yield f"{at}.{missing}", "(missing)", f"required with {at}.{'cert' if lease.cert else 'key'} (client certificate)"
    if lease.password is not None and lease.password_file:
        yield f"{at}.password_file", lease.password_file, f"give {at}.password or password_file, not both"
    if lease.user and lease.password is None and not lease.password_file:
        yield f"{at}.user", lease.user, f"needs {at}.password or password_file"
    if not lease.user and (lease.password is not None or lease.password_file):
        yield f"{at}.user", "(missing)", "required with a password"
    # Fencing by time (docs/configuration.md): after the last keep-alive that etcd
    # answered, sent at s, our key lives at least until s + ttl. The next keep-alive
    # goes out by s + renew_interval and gives up after request_timeout; fencing starts
    # at s + ttl - fence_margin, and fence_margin must cover cancelling a start (one
    # check_timeout) and killing Milvus. So renew_interval + request_timeout +
    # fence_margin < ttl, and fence_margin >= check_timeout + 1 s.
    budget = lease.renew_every + lease.request_timeout + lease.fence_margin
    if budget >= lease.ttl:
        yield (f"{at}.ttl", lease.ttl,
               f"must exceed renew_interval + request_timeout + fence_margin ({lease.renew_every:g} + "
               f"{lease.request_timeout:g} + {lease.fence_margin:g} = {budget:g}s): the holder must stop Milvus "
               "and remove the VIP before its etcd lease can expire")
    need = milvus.check_timeout + 1.0
    if lease.fence_margin < need:
        yield (f"{at}.fence_margin", lease.fence_margin,
               f"must be at least check_timeout + 1 ({need:g}s): the time to cancel a start and kill Milvus "
               "before the etcd lease can expire")


def _check_sessions(v: dict) -> Iterator[Problem]:
    milvus = v.get("milvus")
    if milvus is None or not milvus.sessions.clear_stale or milvus.lease.enabled:
        return
    yield ("milvus.sessions.clear_stale", True, "needs the storage lease (milvus.lease): only the lease proves "
           "that no other Milvus runs, which is what makes the old server's sessions stale")


_CROSS_CHECKS = (_check_interval, _check_addresses, _check_unicast, _check_auth,
                 _check_preempt, _check_checksum, _check_lease, _check_sessions)


def cross_checks(values: dict) -> list[Problem]:
    """Checks across fields, on whichever top-level fields are valid on their own."""
    return [p for check in _CROSS_CHECKS for p in check(values)]
