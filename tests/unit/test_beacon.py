"""Peer beacon payloads: what is accepted, and that garbage is ignored, never raised."""

from hypothesis import given, strategies as st

from havip.net.beacon import PeerState, decode, encode

INFO = {"instance": "backup", "vrid": 51, "state": "backup", "priority": 91, "healthy": True,
        "paused": False, "container": "stopped"}


def test_round_trip():
    assert decode(encode(INFO), "198.18.0.21") == PeerState(src="198.18.0.21", **INFO)


def test_health_unknown_and_no_container_are_fine():
    info = {**INFO, "healthy": None, "container": None}
    assert decode(encode(info), "x").healthy is None


def test_wrong_shapes_are_ignored():
    assert decode(b"not json", "x") is None
    assert decode(b"[1,2]", "x") is None
    assert decode(encode({**INFO, "vrid": "51"}), "x") is None
    assert decode(encode({**INFO, "priority": True}), "x") is None
    assert decode(encode({k: v for k, v in INFO.items() if k != "state"}), "x") is None
    assert decode(b'{"havip": 2}', "x") is None
    assert decode(b" " * 5000, "x") is None


@given(st.binary(max_size=1200))
def test_random_bytes_never_raise(data):
    assert decode(data, "x") is None or isinstance(decode(data, "x"), PeerState)
