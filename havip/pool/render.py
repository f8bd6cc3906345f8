"""The nginx configuration of the read pool, rendered from a template.

`render(cfg, up)` is pure: the same config and membership give the same bytes (the
golden files in tests/fixtures/pool/ hold them). What it renders, and why each line is
there, is explained in docs/read-pool.md; in short:

- `http {}` with an HTTP/2 listener: gRPC is HTTP/2, and `grpc_pass` exists only in
  `http {}` (nginx 1.22 on Debian 12 spells it `listen ... http2`);
- one `location =` per read method, to the read upstream, where a read that could not
  reach its member (refused, connect timeout) goes to another one. nginx resends no gRPC
  call once any of it went out: its gRPC handler always streams the request body
  (`request_body_no_buffering`), and `ngx_http_upstream_next` gives up on a streamed
  request that was sent, so `non_idempotent` never takes effect under grpc_pass on
  nginx 1.22; it is there, in read locations only, to say which calls may be sent
  twice. A read in flight on a member that dies is answered UNAVAILABLE at once and the
  client retries it (docs/read-pool.md, "What is guaranteed"). Everything else goes to
  the writer, never retried;
- the read upstream has a `zone` (passive failures are shared by every worker) and
  `keepalive` (no TCP+HTTP/2 handshake per call); a member whose active checks failed
  is `down`; the writer is its `backup`, or, with `fallback: unavailable`, a read with
  no healthy member is answered at once with gRPC status 14 (UNAVAILABLE);
- Milvus-sized limits: 256m bodies, long-lived client connections, timeouts per side.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Template

from havip.pool import methods
from havip.pool.config import PoolConfig, canonical

READ_UPSTREAM, WRITE_UPSTREAM = "havip_read", "havip_write"
UNAVAILABLE = 14        # grpc.StatusCode.UNAVAILABLE

TEMPLATE = Template("""\
# Rendered by havip pool (instance $instance); havip rewrites it on every membership
# change. Do not edit: change $source_hint instead. See docs/read-pool.md.
worker_processes $worker_processes;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;

events {
    worker_connections $worker_connections;
}

http {
    # Requests routed per member: havip pool reads this log ($$upstream_addr).
    log_format havip_pool '$$msec $$uri $$upstream_addr $$status $$sent_trailer_grpc_status $$request_time';
    access_log $prefix/logs/access.log havip_pool;

    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;

    # Milvus-sized requests: inserts and multi-vector searches are large (1m = 413).
    client_max_body_size $client_max_body_size;
    client_body_buffer_size 1m;
    large_client_header_buffers 4 64k;
    # A Milvus client keeps one HTTP/2 connection for its life and multiplexes on it.
    keepalive_timeout 3600s;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 1024;

    grpc_connect_timeout $connect_timeout;
    grpc_socket_keepalive on;
    grpc_buffer_size 64k;

    upstream $read_upstream {
        zone $read_upstream 64k;
        least_conn;
$read_servers
        keepalive $keepalive;
        keepalive_timeout 3600s;
        keepalive_requests 1000000;
    }

    upstream $write_upstream {
        zone $write_upstream 64k;
        server $writer max_fails=0;
        keepalive $keepalive;
        keepalive_timeout 3600s;
        keepalive_requests 1000000;
    }

    server {
        listen $listen http2;

        # Reads (from Milvus' proto, havip.pool.methods): the pool; one more member if unreachable.
$read_locations

        # Everything else changes state or must see it: the writer, never retried.
        location / {
            grpc_pass grpc://$write_upstream;
            grpc_next_upstream off;
            grpc_read_timeout $write_timeout;
            grpc_send_timeout $write_timeout;
        }
$unavailable_location
    }
$stub_status
}
""")


def _secs(t: float) -> str:
    """nginx time: whole seconds as "10s", else milliseconds ("500ms")."""
    return f"{int(t)}s" if float(t).is_integer() else f"{round(t * 1000)}ms"


def _server_line(addr: str, up: bool, cfg: PoolConfig) -> str:
    flags = f" max_fails=1 fail_timeout={_secs(cfg.nginx.fail_timeout)}" if cfg.nginx.fail_timeout else \
        " max_fails=0"
    if not up:
        return f"        server {addr}{flags} down;     # failed its checks"
    return f"        server {addr}{flags};"


def _read_servers(cfg: PoolConfig, up: Mapping[str, bool]) -> str:
    lines = [_server_line(m, bool(up.get(m)), cfg) for m in cfg.read_nodes]
    healthy = any(up.get(m) for m in cfg.read_nodes)
    if cfg.fallback == "writer":
        lines.append(f"        server {cfg.writer} backup;     # fallback: no read node is healthy")
    elif not healthy:
        # nginx needs one usable server to load; reads never reach it (they are answered
        # with UNAVAILABLE below).
        lines.append(f"        server {cfg.writer} down;     # placeholder: reads answered UNAVAILABLE")
    return "\n".join(lines)


def _read_location(method: str, cfg: PoolConfig, serve: bool) -> str:
    body = ("            grpc_pass grpc://" + READ_UPSTREAM + ";\n"
            "            grpc_next_upstream error timeout non_idempotent;\n"
            "            grpc_next_upstream_tries 2;\n"
            f"            grpc_read_timeout {_secs(cfg.nginx.read_timeout)};\n"
            f"            grpc_send_timeout {_secs(cfg.nginx.read_timeout)};\n") if serve else \
        "            return 418;     # no healthy read node: answered UNAVAILABLE\n"
    return f"        location = {methods.path(method)} {{\n{body}        }}"


def _unavailable(cfg: PoolConfig, healthy: bool) -> str:
    """A read with nowhere to go gets a trailers-only gRPC answer at once, not a hang."""
    if cfg.fallback == "writer" or healthy:
        return ""
    return ("\n        error_page 418 = @havip_unavailable;\n"
            "        location @havip_unavailable {\n"
            "            default_type application/grpc;\n"
            f"            add_header grpc-status {UNAVAILABLE} always;\n"
            "            add_header grpc-message \"havip pool: no healthy read node\" always;\n"
            "            return 204;\n"
            "        }")


def _stub_status(cfg: PoolConfig) -> str:
    if not cfg.nginx.stub_status:
        return ""
    return ("\n    server {\n"
            f"        listen {cfg.nginx.stub_status};\n"
            "        access_log off;\n"
            "        location = /stub_status { stub_status; }\n"
            "        location / { return 404; }\n"
            "    }")


def render(cfg: PoolConfig, up: Mapping[str, bool], *, prefix: str | None = None,
           source: str = "/etc/havip/pool/pool.yaml") -> str:
    """nginx.conf for `cfg` with the members in `up` (address -> healthy) in service."""
    up = {canonical(k): v for k, v in up.items()}
    up = {m: bool(up.get(canonical(m))) for m in cfg.read_nodes}
    healthy = any(up.values())
    serve = healthy or cfg.fallback == "writer"
    return TEMPLATE.substitute(
        instance=cfg.instance, source_hint=source, prefix=(prefix or cfg.nginx.prefix).rstrip("/"),
        worker_processes=cfg.nginx.worker_processes, worker_connections=cfg.nginx.worker_connections,
        client_max_body_size=cfg.nginx.client_max_body_size, connect_timeout=_secs(cfg.nginx.connect_timeout),
        read_upstream=READ_UPSTREAM, write_upstream=WRITE_UPSTREAM, read_servers=_read_servers(cfg, up),
        keepalive=cfg.nginx.keepalive, writer=cfg.writer, listen=cfg.listen,
        read_locations="\n".join(_read_location(m, cfg, serve) for m in cfg.read_methods),
        write_timeout=_secs(cfg.nginx.write_timeout), unavailable_location=_unavailable(cfg, healthy),
        stub_status=_stub_status(cfg))
