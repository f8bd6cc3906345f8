"""VRRP on the wire: RFC timing, the codec and the receive checks."""
