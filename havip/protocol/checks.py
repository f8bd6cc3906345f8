"""Receive checks that need the configuration (RFC 3768 7.1, RFC 5798 7.1).

`codec.decode` has already checked what the bytes alone can tell (length, version and
type fields, address count, checksum). `check` applies the rest (strangers first, see
_RULES) and returns the first Drop or None to accept. Decisions, compared with keepalived 2.2:

* TTL: multicast adverts must arrive with TTL / hop limit 255 (RFC 5798 7.1 MUST): only
  a sender on the link can produce it. In unicast mode any TTL is accepted, as keepalived
  does ("MUST verify that the IPv4 TTL/IPv6 HL is 255 (but not if unicast)"; its optional
  per-peer min_ttl/max_ttl range is off by default and its peers send unicast_ttl 255).
  Instead havip always requires the source to be a configured peer, which keepalived
  only does with check_unicast_src. A TTL of None (unknown to the socket) is not checked.
* Address list: a differing VIP list is accepted, never dropped; `address_mismatch`
  gives the sentence to log and the ADDRESS_MISMATCH counter to bump. RFC 5798 7.1 only
  asks to log it; RFC 3768 7.1 says to drop unless the sender is the owner, and keepalived
  drops in both versions. Dropping turns a rolling config change (one node gains a VIP)
  into two masters that both drop each other's adverts forever, and for Milvus on shared
  storage two masters is the failure that matters; accepting leaves one master and a loud
  log line.
* Interval: v2 drops a different interval (RFC 3768 7.1 MUST, keepalived too); v3 never
  does, since backups adopt the master's interval (RFC 5798 6.4.2).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Set

from havip.config import Config
from havip.model import Advert, Drop, DropReason

VRRP_TTL = 255
AUTH_TYPES = {"none": 0, "pass": 1}
AUTH_NAMES = {0: "none", 1: "simple password", 2: "IPsec AH"}
AUTH_LEN = 8


def check(advert: Advert, cfg: Config, *, own_addresses: Set[str] = frozenset()) -> Drop | None:
    """The reason to drop `advert` on the instance configured by `cfg`, or None to accept it.

    `own_addresses` are this host's addresses on the interface, so that our own adverts
    looped back by multicast are not taken for a peer's.
    """
    for rule in _RULES:
        detail = rule(advert, cfg, own_addresses)
        if detail is not None:
            reason, sentence = detail
            return Drop(reason, sentence, advert.src)
    return None


def address_mismatch(advert: Advert, cfg: Config) -> str | None:
    """A sentence to log when the advert's VIPs differ from ours (accepted anyway), else None.

    RFC 5798 7.1: "MAY verify that the IPvX Address(es) associated with the VRID are
    valid ... SHOULD log the event". The caller logs it and counts ADDRESS_MISMATCH.
    """
    theirs = {_canonical(a) for a in advert.addresses}
    ours = {str(vip.ip) for vip in cfg.virtual_ipaddresses}
    if theirs == ours:
        return None
    return (f"advert from {advert.src or 'unknown'} lists virtual addresses "
            f"{_listing(theirs)} but ours are {_listing(ours)}; accepted, fix the configuration "
            f"(RFC 5798 7.1)")


# ---------------------------------------------------------------- the rules, in order

Verdict = tuple[DropReason, str] | None


def _own_advert(advert: Advert, cfg: Config, own: Set[str]) -> Verdict:
    mine = {_canonical(a) for a in own}
    if cfg.unicast and cfg.unicast.source:
        mine.add(str(cfg.unicast.source))
    if advert.src and _canonical(advert.src) in mine:
        return DropReason.OWN_ADVERT, f"advert from our own address {advert.src} (looped back)"
    return None


def _ttl(advert: Advert, cfg: Config, own: Set[str]) -> Verdict:
    if cfg.unicast is not None or advert.ttl is None or advert.ttl == VRRP_TTL:
        return None
    return (DropReason.BAD_TTL, f"TTL {advert.ttl} is not 255: the advert crossed a router "
            f"or was forged ({_rfc(advert.version)})")


def _version(advert: Advert, cfg: Config, own: Set[str]) -> Verdict:
    if advert.version == cfg.version:
        return None
    return (DropReason.BAD_VERSION, f"VRRPv{advert.version} advert but this instance runs "
            f"VRRPv{cfg.version} ({_rfc(cfg.version)})")


def _family(advert: Advert, cfg: Config, own: Set[str]) -> Verdict:
    family = _family_of(advert)
    if family is None or family == cfg.family:
        return None
    return (DropReason.BAD_FAMILY, f"IPv{family} advert but this instance's virtual "
            f"addresses are IPv{cfg.family}")


def _vrid(advert: Advert, cfg: Config, own: Set[str]) -> Verdict:
    if advert.vrid == cfg.virtual_router_id:
        return None
    return (DropReason.OTHER_VRID, f"advert for VRID {advert.vrid}, ours is "
            f"{cfg.virtual_router_id} ({_rfc(advert.version)})")


def _peer(advert: Advert, cfg: Config, own: Set[str]) -> Verdict:
    if cfg.unicast is None:
        return None
    peers = {str(p) for p in cfg.unicast.peers}
    if advert.src and _canonical(advert.src) in peers:
        return None
    return (DropReason.NOT_A_PEER, f"unicast advert from {advert.src or 'an unknown source'}, "
            f"which is not a configured peer ({', '.join(sorted(peers))})")


def _auth(advert: Advert, cfg: Config, own: Set[str]) -> Verdict:
    """v2 only: RFC 2338 7.1 "MUST perform authentication specified by Auth Type"."""
    if advert.version != 2:
        return None
    ours = AUTH_TYPES[cfg.authentication.type]
    if advert.auth_type != ours:
        return (DropReason.AUTH_MISMATCH, f"authentication type {_auth_name(advert.auth_type)} "
                f"differs from ours {_auth_name(ours)} (RFC 2338 7.1)")
    if ours == 0:
        return None
    # Compare the padded 8 bytes like keepalived, in constant time; never log a password.
    theirs = advert.password.ljust(AUTH_LEN, b"\0")
    expected = cfg.authentication.password.encode().ljust(AUTH_LEN, b"\0")
    if hmac.compare_digest(theirs, expected):
        return None
    return DropReason.AUTH_MISMATCH, "simple password differs from ours (RFC 2338 7.1)"


def _interval(advert: Advert, cfg: Config, own: Set[str]) -> Verdict:
    """v2 only: RFC 3768 7.1 MUST drop a different interval; v3 backups learn it instead."""
    if advert.version != 2 or advert.interval == cfg.advert_interval:
        return None
    return (DropReason.INTERVAL_MISMATCH, f"advert interval {advert.interval:g}s differs from "
            f"ours {cfg.advert_interval:g}s (RFC 3768 7.1)")


# The RFC lists TTL, version, checksum, VRID, auth, interval; the checks that need no
# trust and say nothing (own address, unicast peer, TTL, family, VRID) come first, so a
# stranger is counted as what it is (not_a_peer, bad_ttl, other_vrid) before any rule
# that warns about a misconfigured peer (version, auth, interval) can run (issue 9).
_RULES: tuple[Callable[[Advert, Config, Set[str]], Verdict], ...] = (
    _own_advert, _peer, _ttl, _family, _vrid, _version, _auth, _interval,
)


# ---------------------------------------------------------------- helpers


def _rfc(version: int) -> str:
    return "RFC 3768 7.1" if version == 2 else "RFC 5798 7.1"


def _canonical(text: str) -> str:
    """One spelling per address (IPv6 has many); text that is no address stays as it is."""
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return text


def _family_of(advert: Advert) -> int | None:
    for text in (advert.src, *advert.addresses):
        try:
            return ipaddress.ip_address(text.split("%", 1)[0]).version
        except ValueError:
            continue
    return None


def _auth_name(auth_type: int) -> str:
    return f"{auth_type} ({AUTH_NAMES.get(auth_type, 'unknown')})"


def _listing(addresses: set[str]) -> str:
    return "[" + ", ".join(sorted(addresses)) + "]"
