"""keepalived.conf -> havip YAML: the seed recipe, the captured lab configs, and the edges."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from havip import config
from havip.migrate import PLACEHOLDER, convert, read_script, render, write
from havip.migrate.scripts import docker_uses, other_commands
from havip.migrate.syntax import Node, parse_conf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "seed"
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "keepalived"


def reader_for(folder: Path):
    """A script reader that finds /etc/keepalived/NAME in `folder` (the host's fixtures)."""
    def read(path: str) -> str | None:
        local = folder / Path(path).name
        return local.read_text() if local.is_file() else None
    return read


def seed(host: str):
    folder = FIXTURES / host
    return convert((folder / "keepalived.conf").read_text(), source=f"{host}/keepalived.conf",
                   script_reader=reader_for(folder))


def conv(body: str, **kw):
    return convert(body, **kw)


def one(result) -> dict:
    assert len(result.configs) == 1
    return next(iter(result.configs.values()))


INSTANCE = """\
vrrp_instance VI_1 {
  interface eth0
  virtual_router_id 51
  priority 110
  virtual_ipaddress {
    10.0.0.5/24
  }
%s
}
"""


# ------------------------------------------------------------------ syntax


def test_syntax_blocks_comments_quotes():
    nodes, problems = parse_conf(
        '! comment\n'
        'global_defs {   # trailing comment\n'
        '  router_id "sol 01"  ! another\n'
        '}\n'
        'vrrp_script chk\n'
        '{\n'
        "  script '/bin/check #1 {x}'\n"
        '}\n'
        'vrrp_instance A { interface eth0 }\n')
    assert problems == []
    assert [n.key for n in nodes] == ["global_defs", "vrrp_script", "vrrp_instance"]
    assert nodes[0].children == [Node(3, ("router_id", "sol 01"))]
    assert nodes[1].line == 5 and nodes[1].children == [Node(7, ("script", "/bin/check #1 {x}"))]
    assert nodes[2].children == [Node(9, ("interface", "eth0"))]
    assert nodes[0].children[0].text == 'router_id "sol 01"'
    assert nodes[1].text == "vrrp_script chk {"


def test_syntax_unbalanced_braces():
    nodes, problems = parse_conf("a {\n  b 1\n}\n}\nc {\n  d 2\n")
    assert problems == ["4: }: closes a block that was never opened", "5: c {: this block is never closed"]
    assert [n.key for n in nodes] == ["a", "c"]


def test_unbalanced_braces_are_untranslated():
    result = conv("vrrp_instance A {\n  interface eth0\n")
    assert "1: vrrp_instance A {: this block is never closed" in result.untranslated


# ------------------------------------------------------------------ scripts


@pytest.mark.parametrize("script, uses", [
    ("docker start milvus", [("start", "milvus")]),
    ("docker container stop -t 30 milvus-standalone", [("stop", "milvus-standalone")]),
    ("X=$(docker inspect --format '{{.State.Running}}' abc123)", [("inspect", "abc123")]),
    ("docker inspect -f '{{.State.Running}}' <docker id>)", [("inspect", "<docker id>")]),
    ("docker restart $CONTAINER && echo ok", [("restart", "$CONTAINER")]),
    ("# docker start commented\n/usr/bin/docker stop a b", [("stop", "a"), ("stop", "b")]),
    ("docker ps; docker logs x", []),
])
def test_docker_uses(script, uses):
    assert docker_uses(script) == uses


def test_other_commands():
    text = (FIXTURES / "backup" / "start_docker.sh").read_text()
    assert other_commands(text) == []
    assert other_commands(text + "curl -s http://alert/\n") == ["curl -s http://alert/"]


# ------------------------------------------------------------------ the seed recipe


def test_seed_master():
    result = seed("master")
    assert result.configs == {"vi_server": {
        "interface": "enp7s0",
        "virtual_router_id": 51,
        "priority": 110,
        "version": 2,
        "advert_interval": 1,
        "authentication": {"type": "pass", "password": "1111"},
        "virtual_ipaddresses": ["192.168.1.104/24"],
        "milvus": {"container": PLACEHOLDER, "check_interval": 2},
    }}
    assert result.untranslated == [
        "6: vrrp_script chk_milvus {: chk_milvus.sh names the container as the placeholder `<docker id>`; "
        "set milvus.container (--partial writes CHANGE-ME, which check-config rejects until it is set)",
        "9: weight -20: havip gives up mastership at once when the Milvus check fails, "
        "instead of lowering its priority by the weight",
    ]
    assert result.notes == [
        "3: router_id sol01: names this host in keepalived's logs and emails; havip does not need it",
        "6: vrrp_script chk_milvus {: havip checks the container and Milvus's gRPC health itself",
        "13: state MASTER: havip starts as backup (as master only with priority 255) and elects by priority; "
        "state is informational",
    ]
    assert not result.complete


def test_seed_backup():
    result = seed("backup")
    assert result.configs == {"vi_server": {
        "interface": "enp3s0",
        "virtual_router_id": 51,
        "priority": 91,
        "version": 2,
        "advert_interval": 1,
        "authentication": {"type": "pass", "password": "1111"},
        "virtual_ipaddresses": ["192.168.1.104/24"],
        "milvus": {"container": PLACEHOLDER},
    }}
    assert result.untranslated == [
        '19: notify_master "/etc/keepalived/start_docker.sh master": start_docker.sh names the container '
        "as the placeholder `<docker id>`; set milvus.container (--partial writes CHANGE-ME, which check-config rejects until it is set)",
        '20: notify_backup "/etc/keepalived/stop_docker.sh backup": stop_docker.sh names the container '
        "as the placeholder `<docker id>`; set milvus.container (--partial writes CHANGE-ME, which check-config rejects until it is set)",
    ]
    assert ('20: notify_backup "/etc/keepalived/stop_docker.sh backup": stop_docker.sh runs `docker start`, '
            "not `docker stop`: havip stops the container itself on leaving master") in result.notes
    assert ('19: notify_master "/etc/keepalived/start_docker.sh master": start_docker.sh starts the '
            "container; havip does this itself (milvus section)") in result.notes


@pytest.mark.parametrize("host", ["master", "backup"])
def test_seed_converts_to_a_config_that_needs_the_container(host):
    # issue 8 item 6: the placeholder a --partial import writes fails validation, and the
    # result is otherwise valid.
    document = one(seed(host))
    assert document["milvus"]["container"] == PLACEHOLDER
    with pytest.raises(config.ConfigError) as err:
        config.parse(document, default_instance="vi_server")
    assert err.value.problems == ["milvus.container: CHANGE-ME: is a placeholder written by havip "
                                  "import-keepalived; set the name or ID of the Milvus container"]
    document["milvus"]["container"] = "milvus-standalone"
    assert config.parse(document, default_instance="vi_server").milvus.container == "milvus-standalone"
    # The placeholder is reported once, where it came from, not again as "havip would reject".
    assert not [u for u in seed(host).untranslated if "would reject" in u]


def test_seed_fixtures_are_the_seed_text():
    # The fixtures are the recipe verbatim: `<docker id>` and the `docker start` in stop_docker.sh.
    stop = (FIXTURES / "backup" / "stop_docker.sh").read_text()
    assert 'if [[ "${RUNNING_STATUS}" = "true" ]];then\ndocker start <docker id>\nfi\n' in stop
    assert "weight -20" in (FIXTURES / "master" / "keepalived.conf").read_text()


def test_seed_with_the_container_filled_in_is_complete(tmp_path):
    for name in ("start_docker.sh", "stop_docker.sh"):
        text = (FIXTURES / "backup" / name).read_text().replace("<docker id>", "milvus_cpu_1.0")
        (tmp_path / name).write_text(text.replace("docker start", "docker stop") if name.startswith("stop")
                                     else text)
    result = convert((FIXTURES / "backup" / "keepalived.conf").read_text(), script_reader=reader_for(tmp_path))
    assert one(result)["milvus"] == {"container": "milvus_cpu_1.0"}
    assert result.untranslated == [] and result.complete
    assert any("stop_docker.sh stops the container; havip does this itself" in n for n in result.notes)


def test_seed_without_a_script_reader_keeps_the_hooks():
    result = convert((FIXTURES / "backup" / "keepalived.conf").read_text())
    assert one(result)["notify"] == {"master": "/etc/keepalived/start_docker.sh",
                                     "backup": "/etc/keepalived/stop_docker.sh"}
    assert "milvus" not in one(result)
    assert result.untranslated == [
        '19: notify_master "/etc/keepalived/start_docker.sh master": could not read '
        "/etc/keepalived/start_docker.sh; kept as notify.master. If it starts or stops the Milvus "
        "container, replace it by a milvus section",
        '20: notify_backup "/etc/keepalived/stop_docker.sh backup": could not read '
        "/etc/keepalived/stop_docker.sh; kept as notify.backup. If it starts or stops the Milvus "
        "container, replace it by a milvus section",
    ]


def test_seed_master_without_a_script_reader():
    result = convert((FIXTURES / "master" / "keepalived.conf").read_text(), script_reader=read_script)
    assert "6: vrrp_script chk_milvus {: could not read /etc/keepalived/chk_milvus.sh to see what it checks" \
        in result.untranslated
    assert "milvus" not in one(result)


# ------------------------------------------------------------------ the captured lab configs

VECTOR_EXPECTED = {
    # name: (stem, vrid, priority, interval, version, password, VIPs, unicast)
    "v2-auth-pass.h1.conf": ("vi_server", 51, 110, 1, 2, "1111", ["198.18.0.50/24"], None),
    "v2-auth-pass.h2.conf": ("vi_server", 51, 91, 1, 2, "1111", ["198.18.0.50/24"], None),
    "v2-unicast-auth.h1.conf": ("vi_uni", 52, 110, 1, 2, "secret12", ["198.18.0.60/24", "198.18.0.61/24"],
                                {"source": "198.18.0.11", "peers": ["198.18.0.21"]}),
    "v2-unicast-auth.h2.conf": ("vi_uni", 52, 91, 1, 2, "secret12", ["198.18.0.60/24", "198.18.0.61/24"],
                                {"source": "198.18.0.21", "peers": ["198.18.0.11"]}),
    "v3-10cs.h1.conf": ("vi_server", 51, 110, 0.1, 3, None, ["198.18.0.50/24"], None),
    "v3-10cs.h2.conf": ("vi_server", 51, 91, 0.1, 3, None, ["198.18.0.50/24"], None),
    "v3-ipv6.h1.conf": ("vi_v6", 53, 110, 0.5, 3, None, ["fd00:198:18::50/64"], None),
    "v3-ipv6.h2.conf": ("vi_v6", 53, 91, 0.5, 3, None, ["fd00:198:18::50/64"], None),
}


def test_all_vector_configs_are_covered():
    # Fails (never skips) when tests/vectors is missing or grows a config nobody converts.
    assert sorted(p.name for p in VECTORS.glob("*.conf")) == sorted(VECTOR_EXPECTED)


@pytest.mark.parametrize("name", sorted(VECTOR_EXPECTED))
def test_vector_configs(name):
    stem, vrid, priority, interval, version, password, vips, unicast = VECTOR_EXPECTED[name]
    result = convert((VECTORS / name).read_text(), source=name)
    expected = {"interface": "eth0", "virtual_router_id": vrid, "priority": priority, "version": version,
                "advert_interval": interval}
    if password:
        expected["authentication"] = {"type": "pass", "password": password}
    expected["virtual_ipaddresses"] = vips
    if unicast:
        expected["unicast"] = unicast
    assert result.configs == {stem: expected}
    assert result.untranslated == []
    assert any(": router_id sol-h" in note for note in result.notes)
    cfg = config.parse(result.configs[stem], default_instance=stem)
    assert (cfg.virtual_router_id, cfg.priority, cfg.advert_interval, cfg.version) == \
        (vrid, priority, interval, version)


# ------------------------------------------------------------------ statements


def test_vip_defaults_and_options():
    result = conv(INSTANCE.replace("10.0.0.5/24", "10.0.0.5\n    10.0.0.6/24 dev eth1 label eth1:0") % "")
    assert one(result)["virtual_ipaddresses"] == ["10.0.0.5/32", "10.0.0.6/24"]
    assert result.untranslated == ["7: 10.0.0.6/24 dev eth1 label eth1:0: options `dev eth1 label eth1:0` "
                                   "are not translated; havip adds the address on `interface` with no options"]


def test_ipv6_defaults_to_v3_and_host_prefix():
    result = conv(INSTANCE.replace("10.0.0.5/24", "fd00::5") % "")
    assert one(result)["virtual_ipaddresses"] == ["fd00::5/128"]
    assert one(result)["version"] == 3


def test_global_version_and_garp_defaults():
    result = conv("global_defs {\n  vrrp_version 3\n  vrrp_garp_master_delay 5\n}\n"
                  + INSTANCE % "  advert_int 0.25\n  garp_master_repeat 3\n  garp_master_refresh 60")
    doc = one(result)
    assert (doc["version"], doc["advert_interval"]) == (3, 0.25)
    assert doc["garp"] == {"repeat": 3, "refresh": 60}
    assert result.untranslated == []
    assert result.notes == ["3: vrrp_garp_master_delay 5: havip sends its gratuitous ARPs as soon as it "
                            "becomes master and has no second burst; garp.refresh repeats them periodically"]


def test_instance_version_wins():
    result = conv("global_defs {\n  vrrp_version 3\n}\n" + INSTANCE % "  version 2")
    assert one(result)["version"] == 2


def test_preempt_settings():
    doc = one(conv(INSTANCE % "  state BACKUP\n  nopreempt\n"))
    assert doc["preempt"] is False
    doc = one(conv(INSTANCE % "  preempt_delay 30"))
    assert doc["preempt_delay"] == 30 and "preempt" not in doc


def test_nopreempt_with_state_master_is_ignored_like_keepalived():
    result = conv(INSTANCE % "  state MASTER\n  nopreempt")
    assert one(result)["preempt"] is True
    assert "9: nopreempt: keepalived ignores nopreempt with an initial state MASTER; so does the translation" \
        in result.notes


def test_state_master_without_priority_is_the_owner():
    result = conv(INSTANCE.replace("  priority 110\n", "") % "  state MASTER")
    assert one(result)["priority"] == 255
    assert "7: state MASTER: no priority: keepalived makes a MASTER the address owner (255)" in result.notes
    assert one(conv(INSTANCE.replace("  priority 110\n", "") % ""))["priority"] == 100


def test_authentication_edges():
    long = conv(INSTANCE % "  authentication {\n    auth_type PASS\n    auth_pass 0123456789\n  }")
    assert one(long)["authentication"] == {"type": "pass", "password": "01234567"}
    assert any("keepalived sends only the first 8 bytes" in n for n in long.notes)
    ah = conv(INSTANCE % "  authentication {\n    auth_type AH\n    auth_pass secret\n  }")
    assert "9: auth_type AH: havip supports only PASS (simple password) authentication" in ah.untranslated
    assert "authentication" not in one(ah)
    v3 = conv(INSTANCE % "  version 3\n  authentication {\n    auth_type PASS\n    auth_pass x\n  }")
    assert "authentication" not in one(v3)
    assert "9: authentication {: keepalived ignores authentication with VRRPv3; so does the translation" \
        in v3.notes


def test_notify_hooks_that_are_not_docker():
    def reader(path: str) -> str:
        return "#!/bin/sh\nlogger \"$@\"\n"
    result = conv(INSTANCE % '  notify_master "/usr/local/bin/tell master"\n'
                             '  notify_fault /usr/local/bin/tell\n'
                             '  notify_stop "/usr/local/bin/tell stopping now"\n'
                             '  notify "/usr/local/bin/tell"', script_reader=reader)
    assert one(result)["notify"] == {"master": "/usr/local/bin/tell", "fault": "/usr/local/bin/tell",
                                     "stop": "/usr/local/bin/tell"}
    assert result.untranslated == [
        '10: notify_stop "/usr/local/bin/tell stopping now": havip runs hooks as `PATH STATE PRIORITY '
        "INSTANCE`; the arguments `stopping now` are not passed",
        "11: notify /usr/local/bin/tell: this script gets keepalived's own arguments; "
        "use notify.master/backup/fault/stop",
    ]


def test_notify_script_with_extra_commands():
    def reader(path: str) -> str:
        return "#!/bin/sh\ndocker start milvus\ncurl -s http://alert/\n"
    result = conv(INSTANCE % '  notify_master "/etc/keepalived/up.sh"', script_reader=reader)
    assert one(result)["milvus"] == {"container": "milvus"}
    assert result.untranslated == ['8: notify_master /etc/keepalived/up.sh: /etc/keepalived/up.sh also runs '
                                   "`curl -s http://alert/`; havip takes over only its docker commands"]


def test_conflicting_containers():
    scripts = {"/a.sh": "docker start milvus-a\n", "/b.sh": "docker stop milvus-b\n"}
    result = conv(INSTANCE % '  notify_master /a.sh\n  notify_backup /b.sh', script_reader=scripts.get)
    assert one(result)["milvus"] == {"container": "milvus-a"}
    assert ("1: vrrp_instance VI_1 {: the scripts name different containers (milvus-a, milvus-b); "
            "havip manages one: set milvus.container (--partial writes milvus-a)") in result.untranslated


def test_check_script_settings_and_weight_zero():
    body = ('vrrp_script chk {\n  script "docker inspect -f {{.State.Running}} milvus"\n'
            '  interval 2\n  timeout 1\n  rise 3\n  fall 4\n  weight 0\n  user nobody\n}\n')
    result = conv(body + INSTANCE % "  track_script {\n    chk\n  }")
    assert one(result)["milvus"] == {"container": "milvus", "check_interval": 2, "check_timeout": 1,
                                     "rise": 3, "fall": 4}
    assert result.untranslated == ["8: user nobody: havip has no equivalent"]


def test_other_check_scripts_are_untranslated_line_by_line():
    body = 'vrrp_script chk {\n  script "killall -0 haproxy"\n  interval 2\n  weight 2\n}\n'
    result = conv(body + INSTANCE % "  track_script {\n    chk weight 10\n    missing\n  }")
    assert result.untranslated == [
        "1: vrrp_script chk {: havip runs its own Milvus checks (container and gRPC); "
        "other check scripts are not supported",
        "3: interval 2: inside the untranslated vrrp_script block",
        "4: weight 2: havip gives up mastership at once when the Milvus check fails, instead of lowering "
        "its priority by the weight",
        "14: chk weight 10: havip gives up mastership at once when the Milvus check fails, instead of "
        "lowering its priority by the weight",
        "15: missing: no vrrp_script named missing",
    ]


def test_unused_vrrp_script_is_a_note():
    result = conv('vrrp_script lonely {\n  script "/bin/true"\n}\n' + INSTANCE % "")
    assert "1: vrrp_script lonely {: no vrrp_instance tracks this script; ignored" in result.notes


def test_everything_else_is_untranslated_line_by_line():
    body = ("include /etc/keepalived/extra.conf\n"
            "global_defs {\n  notification_email {\n    ops@example.com\n  }\n  vrrp_strict\n}\n"
            "vrrp_sync_group G {\n  group {\n    VI_1\n  }\n}\n"
            "virtual_server 10.0.0.5 19530 {\n  lb_algo rr\n}\n"
            + INSTANCE % "  track_interface {\n    eth1\n  }\n  unicast_peer {\n    10.0.0.2 min_ttl 1\n  }")
    result = conv(body)
    assert result.untranslated == [
        "1: include /etc/keepalived/extra.conf: included files are not read; convert them separately",
        "3: notification_email {: havip does not send email",
        "4: ops@example.com: inside the untranslated notification_email block",
        "6: vrrp_strict: havip has no equivalent",
        "8: vrrp_sync_group G {: havip runs one instance per file; sync groups are not supported",
        "9: group {: inside the untranslated vrrp_sync_group block",
        "10: VI_1: inside the untranslated group block",
        "13: virtual_server 10.0.0.5 19530 {: havip moves a VIP; it is not a load balancer (LVS)",
        "14: lb_algo rr: inside the untranslated virtual_server block",
        "23: track_interface {: havip watches only its own interface",
        "24: eth1: inside the untranslated track_interface block",
        "27: 10.0.0.2 min_ttl 1: per-peer options are not translated",
    ]
    assert one(result)["unicast"] == {"peers": ["10.0.0.2"]}


def test_values_havip_rejects_are_untranslated():
    result = conv(INSTANCE.replace("priority 110", "priority 300").replace("interface eth0\n", "") % "")
    assert result.untranslated == [
        "1: vrrp_instance VI_1 {: havip would reject the result: interface: (missing): required",
        "1: vrrp_instance VI_1 {: havip would reject the result: priority: 300: must be between 1 and 255",
    ]


def test_not_a_number():
    result = conv(INSTANCE.replace("priority 110", "priority high") % "")
    assert "4: priority high: high is not a whole number" in result.untranslated


def test_several_instances_and_names():
    text = INSTANCE % "" + INSTANCE.replace("51", "52") % "" + INSTANCE.replace("VI_1", "Milvus.HA") % ""
    result = conv(text)
    assert list(result.configs) == ["vi_1", "vi_1-2", "milvus.ha"]
    assert result.configs["vi_1-2"]["virtual_router_id"] == 52


def test_empty_file():
    result = conv("! nothing here\n", source="empty.conf")
    assert result.configs == {}
    assert result.untranslated == ["0: empty.conf: no vrrp_instance found; nothing to convert"]


_WORDS = st.sampled_from(["vrrp_instance", "VI_1", "{", "}", "\n", "interface", "eth0", "priority", "300",
                          "virtual_ipaddress", "10.0.0.1/24", "fd00::1", "track_script", "vrrp_script",
                          "chk", "script", '"/x.sh a"', "weight", "-20", "notify_master", "nopreempt",
                          "authentication", "auth_type", "PASS", "auth_pass", "#", "!", "'", '"', "state",
                          "MASTER", "unicast_peer", "version", "3", "advert_int", "0.5", "include"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=60).map(" ".join) | st.text(max_size=200))
def test_convert_never_crashes(text):
    scripts = {"/x.sh": "docker start <docker id>\ndocker stop milvus\n"}
    result = convert(text, script_reader=scripts.get)
    for stem, document in result.configs.items():
        assert render(result, stem).startswith("# havip configuration")
        try:
            config.parse(document, default_instance=stem)
        except config.ConfigError as err:
            # Whatever havip would reject is in the untranslated list.
            assert all(any(p in line for line in result.untranslated) for p in err.problems)


# ------------------------------------------------------------------ writing


def test_write_and_load_back(tmp_path):
    result = seed("master")
    [path] = write(result, tmp_path / "out")
    assert path == tmp_path / "out" / "vi_server.yaml"
    text = path.read_text()
    assert text == render(result, "vi_server")
    assert text.startswith("# havip configuration for instance vi_server, converted from master/keepalived.conf\n")
    assert "#   untranslated: 9: weight -20: havip gives up mastership at once" in text
    assert yaml.safe_load(text) == result.configs["vi_server"]
    with pytest.raises(config.ConfigError, match="milvus.container: CHANGE-ME: is a placeholder"):
        config.load(path)
    path.write_text(text.replace(PLACEHOLDER, "milvus-standalone"))
    cfg = config.load(path)
    assert (cfg.instance, cfg.priority, cfg.authentication.password) == ("vi_server", 110, "1111")


def test_write_refuses_to_overwrite(tmp_path):
    result = seed("backup")
    write(result, tmp_path)
    (tmp_path / "vi_server.yaml").write_text("mine\n")
    with pytest.raises(FileExistsError):
        write(result, tmp_path)
    assert (tmp_path / "vi_server.yaml").read_text() == "mine\n"
    write(result, tmp_path, overwrite=True)
    assert yaml.safe_load((tmp_path / "vi_server.yaml").read_text())["priority"] == 91


def test_read_script(tmp_path):
    (tmp_path / "s.sh").write_text("docker start x\n")
    assert read_script(str(tmp_path / "s.sh")) == "docker start x\n"
    assert read_script(str(tmp_path / "missing.sh")) is None
