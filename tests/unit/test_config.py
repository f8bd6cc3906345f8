"""Config validation: every problem at once, each as `path: value: reason`."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from havip.config import Config, load, parse
from havip.errors import ConfigError, HavipError

ROOT = Path(__file__).resolve().parents[2]

GOOD = {
    "interface": "eth0",
    "virtual_router_id": 51,
    "priority": 110,
    "version": 2,
    "advert_interval": 1,
    "authentication": {"type": "pass", "password": "1111"},
    "virtual_ipaddresses": ["192.168.1.104/24"],
}
GOOD_V3 = {"interface": "eth0", "virtual_router_id": 53, "version": 3, "advert_interval": 0.5,
           "virtual_ipaddresses": ["fd00:198:18::50/64"]}


def problems(data: object, **kw) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(data, **kw)
    return err.value.problems


def with_(base: dict, **changes) -> dict:
    """`base` with top-level keys replaced; a value of ... removes the key."""
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not ...}


# ------------------------------------------------------------------ good configs


@pytest.mark.parametrize("name", ["master", "backup"])
def test_shipped_configs_load(name):
    cfg = load(ROOT / "conf" / f"{name}.yaml")
    assert cfg.instance == name
    assert cfg.virtual_router_id == 51
    assert cfg.priority == {"master": 110, "backup": 91}[name]
    assert cfg.virtual_ipaddresses == [ipaddress.ip_interface("192.168.1.104/24")]
    assert (cfg.authentication.type, cfg.authentication.password) == ("pass", "1111")
    assert cfg.milvus is not None and cfg.milvus.container == "milvus"
    assert cfg.control_socket == f"/run/havip/{name}.sock"


def test_defaults():
    cfg = parse({"interface": "eth0", "virtual_router_id": 1, "virtual_ipaddresses": ["10.0.0.5"]})
    assert (cfg.priority, cfg.version, cfg.advert_interval, cfg.preempt) == (100, 2, 1.0, True)
    assert cfg.authentication.type == "none"
    assert cfg.virtual_ipaddresses == [ipaddress.ip_interface("10.0.0.5/32")]   # keepalived's default
    assert cfg.instance == "havip" and cfg.family == 4 and not cfg.owner
    assert cfg.milvus is None and cfg.unicast is None and cfg.notify.master is None


def test_stop_grace_default_is_the_measured_one():
    """docker stop's grace defaults to 5 s, not 30 s (issue 11 item 2, measured on Milvus
    2.3.5 standalone: a serving Milvus never ended on SIGTERM within 30 s, so every second
    of grace was outage on each planned switchover; a kill lost no acknowledged row; 5 s
    of SIGTERM made the next start faster than a kill). The shipped configs say 5 too."""
    cfg = parse({**GOOD, "milvus": {"container": "milvus"}})
    assert cfg.milvus.stop_timeout == 5.0
    for name in ("master", "backup"):
        assert load(ROOT / "conf" / f"{name}.yaml").milvus.stop_timeout == 5.0


def test_full_config():
    cfg = parse(with_(GOOD, priority=255, preempt_delay=0,
                      unicast={"source": "192.168.1.85", "peers": ["192.168.1.38"]},
                      milvus={"container": "milvus-standalone", "docker": "tcp://127.0.0.1:2375",
                              "grpc": "[::1]:19530", "data_path": "/srv/milvus", "check_timeout": 5,
                              "check_interval": 1},
                      notify={"master": "/etc/havip/notify.sh"}, control={"socket": "/tmp/h.sock"},
                      metrics={"listen": "0.0.0.0:9405"}), default_instance="vi_server")
    assert cfg.owner and cfg.instance == "vi_server" and cfg.control_socket == "/tmp/h.sock"
    assert cfg.unicast.peers == [ipaddress.ip_address("192.168.1.38")]
    assert cfg.milvus.check_timeout == 5    # longer than the interval: allowed, see docs


@pytest.mark.parametrize("interval", [0.01, 0.1, 0.5, 1.27, 40.95])
def test_v3_intervals_in_centiseconds(interval):
    assert parse(with_(GOOD_V3, advert_interval=interval)).advert_interval == interval


def test_ipv6_v3():
    cfg = parse(GOOD_V3)
    assert cfg.family == 6 and cfg.version == 3


def test_config_is_frozen():
    cfg = parse(GOOD)
    with pytest.raises(Exception):
        cfg.priority = 1      # type: ignore[misc]
    assert isinstance(cfg, Config)


def test_config_error_is_a_havip_error():
    assert issubclass(ConfigError, HavipError)


# ------------------------------------------------------------------ one mistake, one line


BAD = [
    # field types and ranges
    ({"priority": 300}, "priority: 300: must be between 1 and 255"),
    ({"priority": 0}, "priority: 0: must be between 1 and 255"),
    ({"priority": "110"}, "priority: '110': must be a whole number"),
    ({"priority": True}, "priority: true: must be a whole number"),
    ({"virtual_router_id": 256}, "virtual_router_id: 256: must be between 1 and 255"),
    ({"virtual_router_id": ...}, "virtual_router_id: (missing): required"),
    ({"interface": ...}, "interface: (missing): required"),
    ({"interface": "eth0/1"}, "interface: eth0/1: must be a network interface name: "
                              "1-15 characters, no '/', ':' or spaces"),
    ({"interface": "a-very-long-name0"}, "interface: a-very-long-name0: must be a network interface "
                                         "name: 1-15 characters, no '/', ':' or spaces"),
    ({"interface": "eth 0"}, "interface: eth 0: must be a network interface name: "
                             "1-15 characters, no '/', ':' or spaces"),
    ({"version": 4}, "version: 4: must be 2 or 3"),
    ({"interface": ["eth0"]}, "interface: [eth0]: must be a string"),
    ({"advert_interval": float("nan")}, "advert_interval: .nan: must be between 0.01 and 255 seconds"),
    ({"advert_interval": 0}, "advert_interval: 0: must be between 0.01 and 255 seconds"),
    ({"advert_interval": 256}, "advert_interval: 256: must be between 0.01 and 255 seconds"),
    ({"preempt": "no"}, "preempt: 'no': must be true or false"),
    ({"preempt_delay": 1001}, "preempt_delay: 1001: must be between 0 and 1000 seconds"),
    ({"checksum": "none"}, "checksum: none: must be 'pseudo-header' or 'message'"),
    ({"priorty": 5}, "priorty: 5: unknown key; did you mean priority?"),
    ({"bogus": 1}, "bogus: 1: unknown key"),
    ({"authentication": {"type": "ah", "password": "1111"}},
     "authentication.type: ah: must be 'none' or 'pass'"),
    ({"authentication": {"type": "pass", "password": 1111}},
     "authentication.password: (hidden): must be a string (quote it in YAML)"),
    ({"authentication": {"type": "pass", "password": "123456789"}},
     "authentication.password: (hidden): must be at most 8 bytes (the VRRPv2 authentication data field)"),
    ({"authentication": "pass"}, "authentication: pass: must be a mapping of keys"),
    ({"virtual_ipaddresses": []}, "virtual_ipaddresses: []: must not be empty"),
    ({"virtual_ipaddresses": "192.168.1.104/24"}, "virtual_ipaddresses: 192.168.1.104/24: must be a list"),
    ({"virtual_ipaddresses": ["192.168.1.104/24", "192.168.1.300/24"]},
     "virtual_ipaddresses.1: 192.168.1.300/24: is not an IPv4 or IPv6 address with an optional /prefix"),
    ({"virtual_ipaddresses": ["224.0.0.18"]},
     "virtual_ipaddresses.0: 224.0.0.18: must be a unicast address (not multicast, loopback or unspecified)"),
    ({"unicast": {"peers": []}}, "unicast.peers: []: must not be empty"),
    ({"unicast": {"peers": ["192.168.1.38", "nope"]}}, "unicast.peers.1: nope: is not an IPv4 or IPv6 address"),
    ({"garp": {"repeat": 0}}, "garp.repeat: 0: must be between 1 and 100"),
    ({"garp": {"interval": -1}}, "garp.interval: -1: must be between 0 and 60 seconds"),
    ({"garp": {"delai": 1}}, "garp.delai: 1: unknown key; did you mean delay?"),
    ({"milvus": {}}, "milvus.container: (missing): required"),
    ({"milvus": {"container": "<docker id>"}},
     "milvus.container: <docker id>: must be a Docker container name or ID (letters, digits, '_', '.', '-')"),
    ({"milvus": {"container": "m"}}, "milvus.container: m: must be a Docker container name or ID "
                                                "(letters, digits, '_', '.', '-')"),
    ({"milvus": {"container": "milvus", "rise": 0}}, "milvus.rise: 0: must be between 1 and 100"),
    ({"milvus": {"container": "milvus", "grpc": "19530"}},
     "milvus.grpc: '19530': must be host:port, e.g. 127.0.0.1:19530 or [::1]:19530"),
    ({"milvus": {"container": "milvus", "grpc": "localhost:70000"}},
     "milvus.grpc: localhost:70000: must be host:port, e.g. 127.0.0.1:19530 or [::1]:19530"),
    ({"milvus": {"container": "milvus", "docker": "/var/run/docker.sock"}},
     "milvus.docker: /var/run/docker.sock: must be unix:///path/to/docker.sock or tcp://host:port"),
    ({"milvus": {"container": "milvus", "docker": "tcp://docker"}},
     "milvus.docker: tcp://docker: must be unix:///path/to/docker.sock or tcp://host:port"),
    ({"milvus": {"container": "milvus", "data_path": "milvus/db"}},
     "milvus.data_path: milvus/db: must be an absolute path"),
    ({"milvus": {"container": "milvus", "lease": {"path": "lease"}}},
     "milvus.lease.path: lease: must be an absolute path"),
    ({"milvus": {"container": "milvus", "lease": {"holder": "two words"}}},
     "milvus.lease.holder: two words: must be 1-128 letters, digits or '_.:/@-', unique per host"),
    ({"milvus": {"container": "milvus", "lease": "on"}},
     "milvus.lease: 'on': must be true, false or a mapping (backend, holder; path, orphan_timeout for the "
     "file backend; endpoints, ttl, ... for etcd)"),
    ({"milvus": {"container": "milvus", "lease": {"orphan_timeout": -1}}},
     "milvus.lease.orphan_timeout: -1: must be between 0 and 86400 seconds"),
    ({"milvus": {"container": "milvus", "start_timeout": 0}},
     "milvus.start_timeout: 0: must be more than 0 and at most 3600 seconds"),
    ({"milvus": {"container": "milvus", "check_interval": -1}},
     "milvus.check_interval: -1: must be more than 0 and at most 3600 seconds"),
    ({"notify": {"master": "notify.sh"}},
     "notify.master: notify.sh: must be the absolute path of an executable, e.g. /etc/havip/notify.sh"),
    ({"notify": {"backup": "/etc/keepalived/stop_docker.sh backup"}},
     "notify.backup: /etc/keepalived/stop_docker.sh backup: must be a path without arguments; "
     "havip passes the state, priority and instance name"),
    ({"control": {"socket": "havip.sock"}}, "control.socket: havip.sock: must be an absolute path"),
    ({"metrics": {"listen": 9405}}, "metrics.listen: 9405: must be a string (quote it in YAML)"),
    ({"instance": "my instance"}, "instance: my instance: must be 1-64 letters, digits, '_', '.' or '-' "
                                  "(defaults to the file name)"),
    # settings that are each fine but wrong together
    ({"advert_interval": 0.5}, "advert_interval: 0.5: VRRPv2 carries whole seconds; "
                               "use version: 3 for sub-second adverts"),
    ({"version": 3, "authentication": ...}, None),
    ({"version": 3}, "authentication.type: pass: VRRPv3 has no authentication (RFC 5798 9); "
                     "use version: 2 or remove it"),
    ({"authentication": {"type": "pass"}},
     "authentication.password: '': required when authentication.type is pass"),
    ({"authentication": {"password": "1111"}},
     "authentication.password: (hidden): is ignored unless authentication.type is pass"),
    ({"virtual_ipaddresses": ["fd00::50/64"]}, "version: 2: VRRPv2 is IPv4 only; use version: 3 for IPv6 addresses"),
    ({"virtual_ipaddresses": ["192.168.1.104/24", "192.168.1.104/32"]},
     "virtual_ipaddresses.1: 192.168.1.104/32: same address as virtual_ipaddresses.0"),
    ({"priority": 255, "preempt": False},
     "preempt: false: the address owner (priority 255) always preempts; use priority 254 or less"),
    ({"preempt": False, "preempt_delay": 30}, "preempt_delay: 30: has no effect with preempt: false"),
    ({"checksum": "message"}, "checksum: message: only applies to VRRPv3 over IPv4"),
    ({"unicast": {"source": "fd00::1", "peers": ["192.168.1.38"]}},
     "unicast.source: fd00::1: is IPv6 but the virtual addresses are IPv4"),
    ({"unicast": {"source": "192.168.1.85", "peers": ["192.168.1.85"]}},
     "unicast.peers.0: 192.168.1.85: is unicast.source itself; list only the other hosts"),
    ({"unicast": {"peers": ["192.168.1.38", "192.168.1.38"]}},
     "unicast.peers.1: 192.168.1.38: same address as unicast.peers.0"),
    ({"unicast": {"peers": ["192.168.1.104"]}},
     "unicast.peers.0: 192.168.1.104: is a virtual address; use the host's own address"),
]


@pytest.mark.parametrize("changes, line", BAD, ids=[line or "valid" for _, line in BAD])
def test_one_mistake_one_line(changes, line):
    data = with_(GOOD, **changes)
    if line is None:
        parse(data)
    else:
        assert problems(data) == [line]


V3_BAD = [
    ({"advert_interval": 0.123}, "advert_interval: 0.123: VRRPv3 carries centiseconds; use a multiple of 0.01"),
    ({"advert_interval": 41}, "advert_interval: 41: VRRPv3 carries at most 40.95 seconds (RFC 5798 5.2.7)"),
    ({"virtual_ipaddresses": ["fd00::50/64", "198.18.0.50/24"]},
     "virtual_ipaddresses.1: 198.18.0.50/24: is IPv4 but virtual_ipaddresses.0 is IPv6; "
     "put each family in its own instance"),
    ({"checksum": "message"}, "checksum: message: only applies to VRRPv3 over IPv4"),
]


@pytest.mark.parametrize("changes, line", V3_BAD, ids=[line for _, line in V3_BAD])
def test_v3_mistakes(changes, line):
    assert problems(with_(GOOD_V3, **changes)) == [line]


def test_v3_message_checksum_over_ipv4_is_fine():
    assert parse(with_(GOOD_V3, virtual_ipaddresses=["198.18.0.50/24"], checksum="message")).checksum == "message"


# ------------------------------------------------------------------ everything at once


def test_five_mistakes_five_lines_in_field_order():
    data = with_(GOOD, priority=300, advert_interval=0.5, preempt=False, preempt_delay=10,
                 unicast={"source": "192.168.1.85", "peers": ["192.168.1.85"]},
                 milvus={"container": "milvus", "rise": 0})
    assert problems(data) == [
        "priority: 300: must be between 1 and 255",
        "advert_interval: 0.5: VRRPv2 carries whole seconds; use version: 3 for sub-second adverts",
        "preempt_delay: 10: has no effect with preempt: false",
        "unicast.peers.0: 192.168.1.85: is unicast.source itself; list only the other hosts",
        "milvus.rise: 0: must be between 1 and 100",
    ]


def test_cross_checks_still_run_when_other_fields_are_bad():
    # The field errors (interface, milvus) do not hide the contradictions elsewhere.
    data = with_(GOOD, interface="", version=3, milvus={"container": "milvus", "grpc": "nope"})
    assert problems(data) == [
        "interface: '': must be a network interface name: 1-15 characters, no '/', ':' or spaces",
        "authentication.type: pass: VRRPv3 has no authentication (RFC 5798 9); use version: 2 or remove it",
        "milvus.grpc: nope: must be host:port, e.g. 127.0.0.1:19530 or [::1]:19530",
    ]


def test_a_bad_field_silences_only_the_checks_that_need_it():
    # version is invalid, so nothing that depends on it is guessed at.
    assert problems(with_(GOOD, version="3", advert_interval=0.5)) == ["version: '3': must be 2 or 3"]


def test_a_number_as_a_key():
    assert problems({**GOOD, 1: 2}) == ["1: 1: unknown key; keys are names, not numbers"]


def test_every_missing_required_key():
    assert problems({"priority": 100}) == [
        "interface: (missing): required",
        "virtual_router_id: (missing): required",
        "virtual_ipaddresses: (missing): required",
    ]


@pytest.mark.parametrize("data, line", [
    (None, "conf/x.yaml: (empty): no settings; expected a mapping of key: value lines"),
    ([1, 2], "conf/x.yaml: [1, 2]: must be a mapping of key: value lines, not a list"),
    ("eth0", "conf/x.yaml: eth0: must be a mapping of key: value lines, not a str"),
])
def test_not_a_mapping(data, line):
    assert problems(data, source="conf/x.yaml") == [line]


# ------------------------------------------------------------------ files


def write(tmp_path: Path, text: str, name: str = "vi_server.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_names_the_instance_after_the_file(tmp_path):
    path = write(tmp_path, "interface: eth0\nvirtual_router_id: 51\nvirtual_ipaddresses: [10.0.0.5/24]\n")
    assert load(path).instance == "vi_server"
    path = write(tmp_path, path.read_text() + "instance: other\n")
    assert load(path).instance == "other"


def test_invalid_yaml_is_one_line(tmp_path):
    path = write(tmp_path, "interface: eth0\npriority: [110\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(f"{path}: line 3, column 1: invalid YAML: ")


def test_tab_indentation_is_one_line(tmp_path):
    path = write(tmp_path, "garp:\n\trepeat: 5\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == [f"{path}: line 2, column 1: invalid YAML: found character '\\t' "
                                  "that cannot start any token"]


def test_empty_file(tmp_path):
    path = write(tmp_path, "# nothing yet\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == [f"{path}: (empty): no settings; expected a mapping of key: value lines"]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "nope.yaml")
    assert err.value.problems == [f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"]


def test_directory(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert err.value.problems == [f"{tmp_path}: cannot read: Is a directory"]


def test_unreadable_file(tmp_path):
    # A symlink loop cannot be read even by root (the tests may run as root).
    path = tmp_path / "loop.yaml"
    path.symlink_to(path)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == [f"{path}: cannot read: Too many levels of symbolic links"]


def test_not_utf8(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"interface: \xff\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == [f"{path}: line 1: byte 0xff is not UTF-8: save the file as UTF-8"]


def test_duplicate_keys_are_reported_with_the_other_problems(tmp_path):
    path = write(tmp_path, "interface: eth0\nvirtual_router_id: 51\npriority: 110\n"
                           "virtual_ipaddresses: [10.0.0.5/24]\npriority: 300\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == [
        "priority: 300: duplicate key on line 5 (first on line 3); remove one",
        "priority: 300: must be between 1 and 255",
    ]


def test_duplicate_keys_alone_still_fail(tmp_path):
    path = write(tmp_path, "interface: eth0\nvirtual_router_id: 51\nvirtual_ipaddresses: [10.0.0.5/24]\n"
                           "garp:\n  repeat: 3\n  repeat: 4\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == ["repeat: 4: duplicate key on line 6 (first on line 5); remove one"]


def test_a_duplicate_password_stays_hidden(tmp_path):
    path = write(tmp_path, "interface: eth0\nvirtual_router_id: 51\nvirtual_ipaddresses: [10.0.0.5/24]\n"
                           "authentication:\n  type: pass\n  password: s3cret\n  password: s3cret\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == ["password: (hidden): duplicate key on line 7 (first on line 6); remove one"]
    assert "s3cret" not in str(err.value)


def test_a_file_with_many_mistakes_reports_them_all(tmp_path):
    path = write(tmp_path, """\
interface: enp7s0
virtual_router_id: 51
priority: 110
advert_interval: 1
authentication: {type: pass, password: 1111}
virtual_ipaddresses: [192.168.1.104/24, 192.168.1.104]
unicast: {peers: [192.168.1.38, 192.168.1.38]}
milvus: {container: milvus, grpc: 127.0.0.1}
notify: {backup: /etc/keepalived/stop_docker.sh backup}
""")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.problems == [
        "authentication.password: (hidden): must be a string (quote it in YAML)",
        "virtual_ipaddresses.1: 192.168.1.104/32: same address as virtual_ipaddresses.0",
        "unicast.peers.1: 192.168.1.38: same address as unicast.peers.0",
        "milvus.grpc: 127.0.0.1: must be host:port, e.g. 127.0.0.1:19530 or [::1]:19530",
        "notify.backup: /etc/keepalived/stop_docker.sh backup: must be a path without arguments; "
        "havip passes the state, priority and instance name",
    ]


@pytest.mark.parametrize("lease, data_path, path", [
    (None, "/srv/milvus/db/", "/srv/milvus/db/.havip-lease"),       # on by default, in the shared storage
    (True, "/srv/milvus", "/srv/milvus/.havip-lease"),
    (False, "/srv/milvus", None),
    ({"enabled": False, "path": "/srv/l"}, "/srv/milvus", None),
    ({"path": "/nfs/havip.lease"}, None, "/nfs/havip.lease"),
    ({}, None, None),                                               # nowhere to put it
])
def test_lease_path(lease, data_path, path):
    m = {"container": "milvus"}
    if data_path:
        m["data_path"] = data_path
    if lease is not None:
        m["lease"] = lease
    assert parse(with_(GOOD, milvus=m)).milvus.lease_path == path


# ------------------------------------------------------------------ files that would hang or blow up the reader


def _load_in_child(path: Path, timeout: float = 10.0) -> str:
    """load(path) in a child process (killed at `timeout`): its one line of outcome."""
    import subprocess
    import sys

    code = ("import sys\nfrom havip.config import load, ConfigError\n"
            "try:\n    load(sys.argv[1]); print('ok')\nexcept ConfigError as e:\n    print(e.problems[0])\n")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                             timeout=timeout, cwd=Path(__file__).parents[2])
    except subprocess.TimeoutExpired:
        return f"still reading after {timeout:g}s"
    return (out.stdout or out.stderr).strip().splitlines()[-1]


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    # open() of a FIFO with no writer blocks: a SIGHUP reload hung the loop thread on it,
    # and havipctl hung on a FIFO named *.yaml in the config directory.
    import os

    fifo = tmp_path / "h.yaml"
    os.mkfifo(fifo)
    assert _load_in_child(fifo, 5) == f"{fifo}: cannot read: not a regular file (a FIFO)"


def test_a_yaml_merge_key_bomb_is_refused(tmp_path):
    # Each level merges the one before twice (<<: [*a, *a]): 40 levels, under 2 KiB, are
    # 2**40 keys once PyYAML flattens them; 20 levels took 3 s of the loop thread.
    lines = ["a0: &a0 {k0: 1, k1: 2, k2: 3, k3: 4}"]
    lines += [f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, 40)]
    path = tmp_path / "h.yaml"
    path.write_text("\n".join(lines) + "\n")
    outcome = _load_in_child(path)
    assert outcome.startswith(f"{path}: line 12, column 6: invalid YAML: merge keys (<<) expand to more than "
                              "10000 keys"), outcome
    # Wide instead of deep: 400 mappings that each merge a 100-key mapping 99 times (4 s).
    path.write_text("b: &b {" + ", ".join(f"k{i}: {i}" for i in range(100)) + "}\n"
                    + "".join(f"m{i}: {{<<: [{', '.join(['*b'] * 99)}]}}\n" for i in range(400)))
    outcome = _load_in_child(path)
    assert outcome.startswith(f"{path}: line 3, column 5: invalid YAML: merge keys (<<) expand to more than "
                              "10000 keys"), outcome


def test_merge_keys_still_work(tmp_path):
    path = tmp_path / "h.yaml"
    path.write_text("x-common: &common {interface: eth0, virtual_router_id: 51}\n"
                    "<<: *common\nvirtual_ipaddresses: [198.18.0.50/24]\n")
    with pytest.raises(ConfigError) as err:        # x-common is not a key of ours: merged all the same
        load(path)
    assert err.value.problems == ["x-common: {interface: eth0, virtual_router_id: 51}: unknown key"]


def test_a_flood_of_problems_is_listed_up_to_a_cap(tmp_path):
    # 300,000 bad list items were 300,000 lines: 20 s to format, one 29 MB reload_rejected
    # log line written by the loop thread.
    from havip.config import MAX_PROBLEMS

    path = tmp_path / "h.yaml"
    path.write_text("interface: eth0\nvirtual_router_id: 51\nvirtual_ipaddresses: [" + ",".join(["1"] * 3000) + "]\n"
                    + "".join(f"priority: {i}\n" for i in range(3000)))
    with pytest.raises(ConfigError) as err:
        load(path)
    problems = err.value.problems
    assert len(problems) == 2 * (MAX_PROBLEMS + 1)      # duplicate keys, then the rest
    assert problems[0] == "priority: 1: duplicate key on line 5 (first on line 4); remove one"
    assert problems[MAX_PROBLEMS] == f"... and {2999 - MAX_PROBLEMS} more problems not listed"
    assert problems[-1] == f"... and {3001 - MAX_PROBLEMS} more problems not listed"     # 3,000 VIPs, priority 2999


@pytest.mark.parametrize("path, reason", [
    ("/run/havip/" + "x" * 90 + ".sock", "must be at most 95 bytes long (a Unix socket path)"),
    ("/run/havip/a\x00.sock", "must not contain control characters such as NUL or a newline"),
    ("/run/havip/a\nb.sock", "must not contain control characters such as NUL or a newline"),
    ("/run/havip/", "must be a file name, not a directory"),
], ids=["too-long", "nul", "newline", "directory"])
def test_a_control_socket_the_daemon_cannot_bind_is_refused(path, reason):
    # check-config passed these; `havip run` then failed to bind (too long: the temporary
    # name is 12 bytes longer) or died of a ValueError traceback (NUL).
    with pytest.raises(ConfigError) as err:
        parse({"interface": "eth0", "virtual_router_id": 51, "virtual_ipaddresses": ["198.18.0.50/24"],
               "control": {"socket": path}})
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("control.socket: ")
    assert err.value.problems[0].endswith(": " + reason)


def test_a_nul_in_a_path_is_refused():
    with pytest.raises(ConfigError) as err:
        parse({"interface": "eth0", "virtual_router_id": 51, "virtual_ipaddresses": ["198.18.0.50/24"],
               "milvus": {"container": "milvus", "data_path": "/var/lib/milvus\x00"}})
    assert err.value.problems[0].endswith(": must not contain control characters such as NUL or a newline")
