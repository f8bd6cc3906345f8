"""The rendered nginx config: golden files, `nginx -t` on every render, method routing."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from havip.pool import methods
from havip.pool.config import parse
from havip.pool.render import render
from tests.conftest import REPO, require_binary

GOLDEN = REPO / "tests" / "fixtures" / "pool"
RECIPE = REPO / "tests" / "fixtures" / "nginx-recipe"
PREFIX = "/var/lib/havip/pool"
BASE = {"writer": "192.168.1.104:19530", "read_nodes": ["192.168.1.85:19537", "172.16.10.1:19538", "172.16.10.2:19530"]}
A, B, C = BASE["read_nodes"]

CASES = {
    "all-up": ({}, {A: True, B: True, C: True}),
    "one-down": ({}, {A: True, B: False, C: True}),
    "none-up-writer": ({}, {}),
    "none-up-unavailable": ({"fallback": "unavailable"}, {A: False}),
    "some-up-unavailable": ({"fallback": "unavailable", "read_methods": ["Search", "Query", "GetLoadState"],
                             "nginx": {"stub_status": "127.0.0.1:19541", "read_timeout": 2.5}}, {C: True}),
}


def _render(name: str, prefix: str = PREFIX) -> str:
    extra, up = CASES[name]
    cfg = parse({**BASE, **extra}, local=lambda h: False)
    return render(cfg, up, prefix=prefix)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    text = _render(name)
    path = GOLDEN / f"{name}.conf"
    if os.environ.get("HAVIP_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"render differs from {path} (HAVIP_UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_nginx_accepts_every_render(name, tmp_path):
    nginx = require_binary("nginx")
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(_render(name, prefix=str(tmp_path)))
    proc = subprocess.run([nginx, "-t", "-c", str(conf), "-p", f"{tmp_path}/"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "[warn]" not in proc.stderr, proc.stderr       # no obsolete directive either


def _locations(text: str) -> dict[str, str]:
    return dict(re.findall(r"location (= \S+|/|@\S+) \{\n(.*?)\n        \}", text, re.S))


def test_reads_go_to_the_pool_everything_else_to_the_writer():
    locs = _locations(_render("all-up"))
    reads = {k.removeprefix("= ") for k in locs if k.startswith("= ")}
    assert reads == {methods.path(m) for m in ("Search", "HybridSearch", "Query")}
    for path in reads:
        body = locs[f"= {path}"]
        assert "grpc_pass grpc://havip_read;" in body
        assert "grpc_next_upstream error timeout non_idempotent;" in body and "grpc_next_upstream_tries 2;" in body
    # Writes are never retried: an insert sent twice would be applied twice.
    assert "grpc_pass grpc://havip_write;" in locs["/"] and "grpc_next_upstream off;" in locs["/"]
    assert _render("all-up").count("non_idempotent") == 3


def test_failed_members_are_down_and_the_writer_is_the_backup():
    text = _render("one-down")
    assert f"server {B} max_fails=1 fail_timeout=2s down;" in text
    assert f"server {A} max_fails=1 fail_timeout=2s;" in text
    assert "server 192.168.1.104:19530 backup;" in text
    assert re.search(r"upstream havip_read \{\n\s+zone havip_read 64k;", text) and "keepalive 32;" in text
    assert "listen 0.0.0.0:19540 http2;" in text      # nginx 1.22: http2 is a listen parameter


def test_no_member_and_no_fallback_answers_unavailable():
    text = _render("none-up-unavailable")
    assert "backup" not in text
    locs = _locations(text)
    assert all("return 418;" in locs[f"= {methods.path(m)}"] for m in ("Search", "HybridSearch", "Query"))
    assert "add_header grpc-status 14 always;" in locs["@havip_unavailable"]


def test_milvus_ready_defaults():
    text = _render("all-up")
    for line in ("client_max_body_size 256m;", "keepalive_timeout 3600s;", "keepalive_requests 1000000;",
                 "grpc_read_timeout 10s;", "grpc_read_timeout 600s;", "grpc_connect_timeout 1s;",
                 "http2_max_concurrent_streams 1024;"):
        assert line in text, line
    assert f"client_body_temp_path {PREFIX}/tmp/body;" in text and f"pid {PREFIX}/nginx.pid;" in text


# ------------------------------------------------------------------ the recipe's config


def _nginx_t(conf: Path, tmp_path: Path, load_stream: bool = True) -> subprocess.CompletedProcess:
    nginx = require_binary("nginx")
    text = conf.read_text()
    if load_stream:           # Debian builds the stream module as libnginx-mod-stream
        text = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n" + text
    f = tmp_path / conf.name
    f.write_text(text)
    return subprocess.run([nginx, "-t", "-c", str(f), "-p", f"{tmp_path}/"], capture_output=True, text=True)


def test_recipe_config_fails_nginx_t_on_its_ip_comments(tmp_path):
    proc = _nginx_t(RECIPE / "recipe-stream.conf", tmp_path)
    assert proc.returncode != 0 and 'unknown directive "Ip"' in proc.stderr


def test_recipe_grpc_variant_is_invalid_in_stream(tmp_path):
    proc = _nginx_t(RECIPE / "recipe-grpc.conf", tmp_path)
    assert proc.returncode != 0 and '"location" directive is not allowed here' in proc.stderr


def test_recipe_fixed_is_valid_and_is_what_the_benchmark_runs(tmp_path):
    from string import Template

    text = Template((RECIPE / "recipe-fixed.conf.tmpl").read_text()).substitute(
        prefix=str(tmp_path), listen="127.0.0.1:19585",
        servers="        server 192.168.1.85:19537; # Ip address for milvus1\n"
                "        server 172.16.10.1:19538; # Ip address for Milvus2")
    f = tmp_path / "fixed.conf"
    f.write_text(text)
    proc = _nginx_t(f, tmp_path, load_stream=False)
    assert proc.returncode == 0, proc.stderr


def test_nginx_cannot_be_told_to_buffer_grpc_request_bodies(tmp_path):
    """Why a read already sent to a member that dies is not resent by nginx: grpc_pass always
    streams the request body (nginx 1.22 sets request_body_no_buffering in its gRPC handler,
    and ngx_http_upstream_next gives up once a streamed request was sent), and there is no
    `grpc_request_buffering` to change that (`proxy_request_buffering` is proxy_pass's only).
    If a future nginx accepts it, docs/read-pool.md ("What is guaranteed") must be revisited."""
    nginx = require_binary("nginx")
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    text = _render("all-up", prefix=str(tmp_path))
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("grpc_next_upstream_tries 2;", "grpc_next_upstream_tries 2;\n"
                                 "            grpc_request_buffering on;", 1))
    proc = subprocess.run([nginx, "-t", "-c", str(conf), "-p", f"{tmp_path}/"], capture_output=True, text=True)
    assert proc.returncode != 0 and 'unknown directive "grpc_request_buffering"' in proc.stderr, proc.stderr
