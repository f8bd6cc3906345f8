"""Adapters for the network: raw VRRP socket, VIP via netlink, gratuitous ARP, link state."""
