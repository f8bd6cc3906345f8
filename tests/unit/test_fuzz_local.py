"""Property tests of the local input paths (issue 9): control requests, configuration files.

Every outcome is an answer (control) or a Config / ConfigError whose every line is one
`path: value: reason` line; no exception escapes. The keepalived importer's mutation
fuzzer is in test_migrate_hostile.py. Cases per run: 1,800 from hypothesis here
(CONTROL_CASES, SOCKET_CASES, CONFIG_CASES, BYTES_CASES), 20,000 seeded mutants here
(CONTROL_MUTANTS, CONFIG_MUTANTS) and 6,000 importer mutants: 27,800. A hypothesis case
costs ~5-7 ms of CPU on this machine (mostly drawing), a seeded mutant 0.02-1 ms: hence
the split.
"""

from __future__ import annotations

import json
import socket

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from havip import config
from havip.config import parse, parse_yaml
from havip.control.server import ControlServer
from havip.errors import ConfigError
from tests.unit.fake_daemon import FakeDaemon, RecLog

CONTROL_CASES = 1000
SOCKET_CASES = 100
CONFIG_CASES = 400
BYTES_CASES = 300
FAST = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))

# ------------------------------------------------------------------ control requests

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
_cmd = st.sampled_from(["status", "failover", "pause", "resume", "STATUS", "", "reboot"])
_request = st.fixed_dictionaries({"cmd": _cmd | _json}, optional={"force": _json | st.booleans()})


@st.composite
def _mutated(draw) -> bytes:
    data = type("D", (), {"draw": staticmethod(draw)})
    raw = bytearray(json.dumps(data.draw(_request)).encode())
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(raw)))
        raw[pos:pos] = data.draw(st.sampled_from([b"\x00", b"\xff", b"\xfe\xff", b"[", b"{", b"9" * 50, b'"', b"\\",
                                                  b"\xc3", b"\xef\xbb\xbf", b"\n"]))
    return bytes(raw)


_lines = st.one_of(
    st.binary(max_size=200),
    _request.map(lambda r: json.dumps(r).encode()),
    _mutated(),
    st.integers(1, 300).map(lambda n: b"[" * n + b"]" * n),
    st.integers(4290, 4310).map(lambda n: b'{"cmd": ' + b"7" * n + b"}"),
    st.text(max_size=100).map(lambda t: t.encode("utf-16")),
)

_CODES = {"bad_request", "unknown_command", "busy", "internal"}


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    daemon = FakeDaemon()
    log = RecLog()
    srv = ControlServer(str(tmp_path_factory.mktemp("fuzz") / "c.sock"), daemon, log=log, loop_timeout=1.0)
    yield srv, log
    srv.close()
    daemon.close()


def _check_answer(out: bytes) -> dict:
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    answer = json.loads(out)
    assert isinstance(answer, dict) and isinstance(answer["ok"], bool)
    if not answer["ok"]:
        assert answer["code"] in _CODES and answer["code"] != "internal", answer
        assert "\n" not in answer["error"] and len(answer["error"]) < 400
    return answer


def test_control_request_parsing_never_raises(control):
    srv, log = control

    @settings(FAST, max_examples=CONTROL_CASES)
    @given(_lines)
    def check(line):
        _check_answer(srv.answer_line(line))

    check()
    assert not [e for e in log.lines if e[0] in ("exception", "error")]


def test_control_socket_answers_every_line(control):
    srv, log = control

    @settings(FAST, max_examples=SOCKET_CASES)
    @given(_lines.filter(lambda b: b"\n" not in b))
    def check(line):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(srv.path)
            s.sendall(line + b"\n")
            _check_answer(s.makefile("rb").readline())

    check()
    assert not [e for e in log.lines if e[0] in ("exception", "error")]


# ------------------------------------------------------------------ configuration

_KEYS = ["interface", "virtual_router_id", "priority", "version", "advert_interval", "authentication",
         "virtual_ipaddresses", "preempt", "preempt_delay", "unicast", "garp", "checksum", "milvus", "notify",
         "control", "metrics", "instance", "typo"]
_SUB = ["type", "password", "source", "peers", "container", "grpc", "docker", "data_path", "lease", "socket",
        "listen", "delay", "repeat", "rise", "fall", "master", "path", "holder", "enabled"]
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 70000) | st.floats(allow_nan=True) |
    st.sampled_from(["eth0", "198.18.0.50/24", "198.18.0.0/24", "198.18.0.255/24", "fd00::1/64", "224.0.0.18",
                     "127.0.0.1", "0.0.0.0", "198.18.0.2", "1111", "CHANGE-ME", "milvus", "/abs", "rel",
                     "127.0.0.1:19530", "unix:///x", "pass", "none", "message", "", "\x00", "\u2028", "é"]) |
    st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_SUB) | st.text(max_size=6),
                                                                 inner, max_size=4),
    max_leaves=10)
_documents = st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), _values, max_size=10)


@st.composite
def _yamlish(draw) -> str:
    """A dumped document, then cut and spliced the way a careless edit would."""
    data = type("D", (), {"draw": staticmethod(draw)})
    text = yaml.safe_dump(data.draw(_documents), default_flow_style=data.draw(st.booleans()), allow_unicode=True)
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(text)))
        text = text[:pos] + data.draw(st.sampled_from(["\x00", ":", "- ", "[", "{", "&a ", "*a", "!!python/name:x",
                                                       "\t", "\n  ", "'", '"', "? ", "<<: ", "7" * 60,
                                                       "2024-13-45", "[" * 40])) + text[pos:]
    return text


def _one_line_problems(err: ConfigError) -> None:
    assert err.problems
    for line in err.problems:
        assert "\n" not in line and len(line) < 600, line
        assert line.count(": ") >= 1, line


def test_config_loading_never_raises_anything_but_a_config_error():
    @settings(FAST, max_examples=CONFIG_CASES)
    @given(st.one_of(_yamlish(), st.text(max_size=120)))
    def check(text):
        try:
            data, duplicates = parse_yaml(text, "fuzz.yaml")
            parse(data, source="fuzz.yaml", default_instance="fuzz")
        except ConfigError as err:
            _one_line_problems(err)

    check()


def test_config_files_of_random_bytes_are_one_line_errors(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "fuzz.yaml"

    @settings(FAST, max_examples=BYTES_CASES)
    @given(st.binary(max_size=200) | _yamlish().map(lambda t: t.encode("utf-8", "surrogatepass")))
    def check(raw):
        path.write_bytes(raw)
        try:
            config.load(path)
        except ConfigError as err:
            _one_line_problems(err)

    check()


# ------------------------------------------------------------------ seeded mutation fuzzers (cheap cases, many)

MUTANT_SEED = 20260310
CONTROL_MUTANTS = 14000
CONFIG_MUTANTS = 6000
_REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
_INSERTS = [b"\x00", b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\xc3", b"[", b"]", b"{", b"}", b'"', b"'", b"\\", b":",
            b"- ", b"\n", b"\n  ", b"\t", b"&a ", b"*a", b"!!binary ", b"? ", b"<<: ", b"7" * 40, b"-1", b"1e999",
            b"NaN", b"null", b"true", b"2024-13-45", b"CHANGE-ME", b"224.0.0.18", b"0.0.0.0", b"[" * 30]


def _mutant(rng, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(data) + 1)
        op = rng.randrange(4)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[pos:pos] = rng.choice(_INSERTS)
        elif op == 2:
            del data[pos:pos + rng.randint(1, 20)]
        else:
            del data[pos:]
    return bytes(data)


def test_control_mutants_are_all_answered(control):
    srv, log = control
    rng = __import__("random").Random(MUTANT_SEED)
    seeds = [json.dumps(r).encode() for r in ({"cmd": "status"}, {"cmd": "failover", "force": False},
                                              {"cmd": "pause"}, {"cmd": "resume"}, {"cmd": "status", "x": [1, {}]})]
    codes: dict[str, int] = {}
    for _ in range(CONTROL_MUTANTS):
        line = _mutant(rng, rng.choice(seeds)).split(b"\n")[0]
        answer = _check_answer(srv.answer_line(line))
        key = "ok" if answer["ok"] else answer["code"]
        codes[key] = codes.get(key, 0) + 1
    assert codes.get("ok") and codes.get("bad_request") and codes.get("unknown_command"), codes
    assert not [e for e in log.lines if e[0] in ("exception", "error")]


def test_config_mutants_are_configs_or_one_line_errors():
    rng = __import__("random").Random(MUTANT_SEED)
    seeds = [(_REPO / "conf" / f"{n}.yaml").read_bytes() for n in ("master", "backup")]
    seeds.append(yaml.safe_dump({"interface": "eth0", "virtual_router_id": 51, "version": 3, "advert_interval": 0.5,
                                 "virtual_ipaddresses": ["198.18.0.50/24"], "unicast": {"source": "198.18.0.1",
                                 "peers": ["198.18.0.2"]}, "milvus": {"container": "milvus", "lease": True}}).encode())
    outcomes = {"valid": 0, "invalid": 0}
    for _ in range(CONFIG_MUTANTS):
        raw = _mutant(rng, rng.choice(seeds))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
        try:
            data, _ = parse_yaml(text, "fuzz.yaml")
            parse(data, source="fuzz.yaml", default_instance="fuzz")
            outcomes["valid"] += 1
        except ConfigError as err:
            _one_line_problems(err)
            outcomes["invalid"] += 1
    assert outcomes["valid"] and outcomes["invalid"], outcomes
