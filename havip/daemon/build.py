"""Build the real adapters for a configuration (the tests hand in fakes instead)."""

from __future__ import annotations

from havip.config import Config
from havip.daemon.loop import Adapters


def real_adapters(cfg: Config, *, log=None, metrics=None) -> Adapters:
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
    def make_beacon(source: str):
        from havip.net.beacon import Beacon

        return Beacon(cfg.interface, cfg.family, source=source, peers=[str(p) for p in uni.peers] if uni else None)

    ad = Adapters(make_socket=make_socket, vips=vips, announcer=announcer, link=link, make_beacon=make_beacon,
                  extra_close=[vips.close, announcer.close, link.close])
    if cfg.milvus is not None:
        _add_milvus(cfg, ad, log, metrics)
    return ad


def _add_milvus(cfg: Config, ad: Adapters, log=None, metrics=None) -> None:
    from havip.checks.probes import DockerProbe, LeaseProbe, MilvusProbe
    from havip.checks.runner import CheckRunner
    from havip.checks.watch import ContainerWatch
    from havip.runtime.container import ContainerRuntime

    m = cfg.milvus
    docker_probe = DockerProbe(m.docker, m.container, m.check_timeout)
    milvus_probe = MilvusProbe(m.grpc, m.check_timeout)
    ad.runtime = ContainerRuntime(m.docker, m.container, m.stop_timeout,
                                  after_start=_session_sweep(cfg, ad, log, metrics))
    ad.milvus_probe = milvus_probe
    lease_probe = None
    if m.lease.enabled and m.lease.backend == "etcd":
        ad.lease = etcd_lease(cfg)
        ad.extra_close.append(ad.lease.close)
        lease_probe = LeaseProbe(ad.lease, m.check_timeout)
    elif m.lease_path:
        from havip.runtime.lease import StorageLease, holder_for

        ad.lease = StorageLease(m.lease_path, holder_for(cfg), orphan_timeout=m.lease.orphan_timeout)
        lease_probe = LeaseProbe(ad.lease, m.check_timeout)

    def probes_for_role(role: str):
        if role == "master":
            return [docker_probe.running, milvus_probe.check, *([lease_probe.check] if lease_probe else [])]
        if role == "backup":
            return [lambda: docker_probe.can_serve(m.data_path)]
        return []

    def make_runner(on_change):
        # The engine's `die` event runs a round at once: a killed container is seen in
        # milliseconds instead of at the next round (havip.checks.watch).
        watch = ContainerWatch(m.docker, m.container, m.check_timeout)
        return CheckRunner(probes_for_role, m.check_interval, m.rise, m.fall, on_change, fence=("lease",),
                           triggers=(watch,))

    ad.make_runner = make_runner


def _session_sweep(cfg: Config, ad: Adapters, log, metrics):
    """The stale session sweep after each start of ours, or None (milvus.sessions)."""
    s = cfg.milvus.sessions
    if not s.clear_stale:
        return None
    from havip.runtime.sessions import StaleSessionClearer

    # Only the storage lease proves that no other Milvus runs: read at the sweep's
    # start and again right before it revokes anything.
    def lease_held() -> bool:
        return ad.lease is not None and bool(ad.lease.held)
    return StaleSessionClearer(s.etcd, s.root_path, s.timeout, lease_held, log=log, metrics=metrics)


def etcd_lease(cfg: Config):
    """The etcd lease of a config with `milvus.lease.backend: etcd` (also `havip cleanup`'s)."""
    from havip.errors import AdapterError
    from havip.runtime.etcdlease import EtcdLease, key_for
    from havip.runtime.lease import holder_for

    lease = cfg.milvus.lease
    password = lease.password
    if lease.password_file:
        try:
            with open(lease.password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise AdapterError(f"milvus.lease.password_file: {lease.password_file}: cannot read: "
                               f"{exc.strerror or exc}") from None
    return EtcdLease(lease.endpoints, key_for(lease.prefix, cfg.virtual_router_id), holder_for(cfg), ttl=lease.ttl,
                     renew_interval=lease.renew_every, request_timeout=lease.request_timeout,
                     fence_margin=lease.fence_margin, ca=lease.ca, cert=lease.cert, key_file=lease.key,
                     user=lease.user, password=password)
