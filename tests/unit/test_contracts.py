"""The real adapters and the fakes keep one contract (havip.daemon.contracts).

runtime_checkable Protocols check that the attributes exist; the signatures are compared
too (parameter names, kinds and which have defaults), so that a fake cannot drift from
the adapter it stands for without a failing test."""

from __future__ import annotations

import inspect

import pytest

from havip.checks.runner import CheckRunner
from havip.daemon import contracts
from havip.net.garp import Announcer
from havip.net.link import LinkMonitor
from havip.net.sock import AdvertSocket
from havip.net.vip import VipManager
from havip.runtime.container import ContainerRuntime
from havip.runtime.etcdlease import EtcdLease
from havip.runtime.lease import StorageLease
from tests.fakes import FakeAnnouncer, FakeLease, FakeLink, FakeRuntime, FakeSocket, FakeVips

PAIRS = [
    (contracts.AdvertSocket, [AdvertSocket, FakeSocket]),
    (contracts.Vips, [VipManager, FakeVips]),
    (contracts.Announcer, [Announcer, FakeAnnouncer]),
    (contracts.Link, [LinkMonitor, FakeLink]),
    (contracts.ContainerRuntime, [ContainerRuntime, FakeRuntime]),
    (contracts.Lease, [StorageLease, EtcdLease, FakeLease]),
    (contracts.Runner, [CheckRunner]),
]


def _members(proto) -> dict[str, object]:
    out = {}
    for name, value in vars(proto).items():
        if name.startswith("_"):
            continue
        if callable(value) or isinstance(value, property):
            out[name] = value
    for name in getattr(proto, "__annotations__", {}):
        out.setdefault(name, None)
    return out


def _shape(fn) -> list[tuple[str, str, bool]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind.name, p.default is not inspect.Parameter.empty)
            for p in list(sig.parameters.values())[1:]]


@pytest.mark.parametrize("proto, classes", PAIRS, ids=[p.__name__ for p, _ in PAIRS])
def test_real_adapters_and_fakes_keep_the_contract(proto, classes):
    for cls in classes:
        for name, member in _members(proto).items():
            has = hasattr(cls, name) or name in getattr(cls, "__annotations__", {}) or name in _init_attrs(cls)
            assert has, f"{cls.__name__} lacks {name} of {proto.__name__}"
            if callable(member) and not isinstance(member, property):
                got = getattr(cls, name)
                assert callable(got), f"{cls.__name__}.{name} is not a method"
                assert _shape(got) == _shape(member), \
                    f"{cls.__name__}.{name}{inspect.signature(got)} differs from {proto.__name__}.{name}" \
                    f"{inspect.signature(member)}"


def _init_attrs(cls) -> set[str]:
    """Attributes the class's methods set (self.x = ...), for plain-attribute members like `path`."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return set()
    import re

    return set(re.findall(r"self\.([a-z_]+)\s*=", src))


def test_fakes_pass_the_runtime_checks():
    assert isinstance(FakeSocket(), contracts.AdvertSocket)
    assert isinstance(FakeVips(), contracts.Vips)
    assert isinstance(FakeAnnouncer(), contracts.Announcer)
    assert isinstance(FakeLink(), contracts.Link)
    assert isinstance(FakeRuntime(), contracts.ContainerRuntime)
    assert isinstance(FakeLease(), contracts.Lease)


def test_both_lease_backends_pass_the_runtime_check():
    """The etcd backend stands where StorageLease does (Adapters.lease): no I/O to build."""
    assert isinstance(StorageLease("/nonexistent/.havip-lease", "h1"), contracts.Lease)
    etcd = EtcdLease(["http://198.18.0.1:2379"], "/service/havip/51/leader", "h1/vi_1")
    assert isinstance(etcd, contracts.Lease) and etcd.path == etcd.key and not etcd.held


def test_a_fake_that_drifts_fails_the_contract():
    class Drifted(FakeRuntime):
        def stop(self, grace: bool = True) -> bool:     # renamed parameter
            return False

    with pytest.raises(AssertionError, match="differs"):
        test_real_adapters_and_fakes_keep_the_contract(contracts.ContainerRuntime, [Drifted])
