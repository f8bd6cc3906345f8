"""Build the real adapters for a configuration (the tests hand in fakes instead)."""

from __future__ import annotations

from havip.config import Config
from havip.daemon.loop import Adapters


def real_adapters(cfg: Config) -> Adapters:
    from havip.net.garp import Announcer
    from havip.net.link import LinkMonitor
    from havip.net.sock import AdvertSocket
    from havip.net.vip import VipManager

    uni = cfg.unicast

    def make_socket():
        return AdvertSocket(cfg.interface, cfg.family,
                            unicast_peers=[str(p) for p in uni.peers] if uni else None,
                            unicast_source=str(uni.source) if uni and uni.source else None)

    vips = VipManager(cfg.interface, list(cfg.virtual_ipaddresses))
    announcer = Announcer(cfg.interface)
    link = LinkMonitor(cfg.interface)
    def make_beacon():
        from havip.net.beacon import Beacon

        return Beacon(cfg.interface, cfg.family, peers=[str(p) for p in uni.peers] if uni else None)

    ad = Adapters(make_socket=make_socket, vips=vips, announcer=announcer, link=link, make_beacon=make_beacon,
                  extra_close=[vips.close, announcer.close, link.close])
    if cfg.milvus is not None:
        _add_milvus(cfg, ad)
    return ad


def _add_milvus(cfg: Config, ad: Adapters) -> None:
    from havip.checks.probes import DockerProbe, MilvusProbe
    from havip.checks.runner import CheckRunner
    from havip.runtime.container import ContainerRuntime

    m = cfg.milvus
    docker_probe = DockerProbe(m.docker, m.container, m.check_timeout)
    milvus_probe = MilvusProbe(m.grpc, m.check_timeout)
    ad.runtime = ContainerRuntime(m.docker, m.container, m.stop_timeout)
    ad.milvus_probe = milvus_probe
    lease_probe = None
    if m.lease_path:
        from havip.runtime.lease import StorageLease

        ad.lease = StorageLease(m.lease_path, lease_holder(cfg), orphan_timeout=m.lease.orphan_timeout)
        lease_probe = LeaseProbe(ad.lease, m.check_timeout)

    def probes_for_role(role: str):
        if role == "master":
            return [docker_probe.running, milvus_probe.check, *([lease_probe.check] if lease_probe else [])]
        if role == "backup":
            return [lambda: docker_probe.can_serve(m.data_path)]
        return []

    def make_runner(on_change):
        return CheckRunner(probes_for_role, m.check_interval, m.rise, m.fall, on_change)

    ad.make_runner = make_runner


def lease_holder(cfg: Config) -> str:
    from havip.runtime.lease import holder_for

    return holder_for(cfg)


class LeaseProbe:
    """The master's proof that it still holds the storage lease: the record takes a write.

    An NFS client whose lock was lost while the storage was out of reach gets EIO here;
    a storage that hangs fails by the check's timeout (the runner's deadline)."""

    def __init__(self, lease, timeout: float):
        self.lease = lease
        self.timeout = timeout

    def check(self):
        import time

        from havip.checks.probes import CheckResult
        from havip.errors import HavipError

        t0 = time.monotonic()
        try:
            self.lease.renew()
            ok, reason = True, f"storage lease {self.lease.path} renewed"
        except HavipError as exc:
            ok, reason = False, str(exc)
        now = time.monotonic()
        return CheckResult("lease", ok, reason, now - t0, now)

    check.check_name = "lease"
