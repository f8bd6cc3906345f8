"""The pure decision logic: the VRRP state machine."""
