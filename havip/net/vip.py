"""The virtual addresses, added and removed over rtnetlink in the current namespace.

Every operation is idempotent: adding an address that is there (EEXIST) or removing one
that is not (EADDRNOTAVAIL) is not an error, and the return value lists only what
actually changed, so the daemon can log "added 198.18.0.50/24" exactly once.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from havip.errors import AdapterError
from havip.net.link import errno_text, if_index

Vip = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class VipManager:
    """Adds, removes and lists the configured VIPs on one interface."""

    def __init__(self, ifname: str, vips: list[Vip]):
        self.ifname = ifname
        self.vips = [ipaddress.ip_interface(v) for v in vips]
        try:
            self._ipr = IPRoute()
        except OSError as exc:
            raise AdapterError(f"cannot open a netlink socket to manage the VIPs on {ifname}: "
                               f"{errno_text(exc)}") from None

    def _index(self, action: str, vip: Vip) -> int:
        # Looked up every time: a re-created interface has a new index.
        index = if_index(self.ifname)
        if index is None:
            raise AdapterError(f"cannot {action} {vip} on {self.ifname}: "
                               f"interface {self.ifname} does not exist")
        return index

    def _request(self, command: str, vip: Vip) -> bool:
        """Send one RTM_NEWADDR/RTM_DELADDR; False if it changed nothing."""
        action = "add" if command == "add" else "remove"
        index = self._index(action, vip)
        spec = {"index": index, "address": str(vip.ip), "prefixlen": vip.network.prefixlen}
        if vip.version == 6 and command == "add":
            # No duplicate address detection: a tentative VIP cannot be used for a
            # second or more, and the VRRP election already decided who owns it.
            spec["flags"] = IFA_F_NODAD
        try:
            self._ipr.addr(command, **spec)
        except NetlinkError as exc:
            if command == "add" and exc.code == errno.EEXIST:
                return False
            if command == "del" and exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                return False
            raise AdapterError(f"cannot {action} {vip} on {self.ifname}: {errno_text(exc)}") from None
        except OSError as exc:
            raise AdapterError(f"cannot {action} {vip} on {self.ifname}: {errno_text(exc)}") from None
        return True

    def add(self) -> list[str]:
        """Add every VIP; returns those that were not there before ("ip/prefix")."""
        return self._apply("add", "added")

    def remove(self) -> list[str]:
        """Remove every VIP; returns those that were there."""
        return self._apply("del", "removed")

    def _apply(self, command: str, done: str) -> list[str]:
        # Tries every VIP before raising, and the error still says what changed: the
        # caller must not believe the VIPs it did not get are held (or released).
        changed, errors = [], []
        for v in self.vips:
            try:
                if self._request(command, v):
                    changed.append(str(v))
            except AdapterError as exc:
                errors.append(str(exc))
        if errors:
            raise AdapterError("; ".join(errors) + (f" ({done} {', '.join(changed)})" if changed else ""))
        return changed

    def present(self) -> list[str]:
        """The configured VIPs (address and prefix length) now on the interface."""
        index = if_index(self.ifname)
        if index is None:
            raise AdapterError(f"cannot list the VIPs on {self.ifname}: "
                               f"interface {self.ifname} does not exist")
        try:
            held = {
                (ipaddress.ip_address(m.get("address") or m.get("local")), m["prefixlen"])
                for fam in (socket.AF_INET, socket.AF_INET6)
                for m in self._ipr.addr("dump", index=index, family=fam)
            }
        except (NetlinkError, OSError) as exc:
            raise AdapterError(f"cannot list the VIPs on {self.ifname}: {errno_text(exc)}") from None
        return [str(v) for v in self.vips if (v.ip, v.network.prefixlen) in held]

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> "VipManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
