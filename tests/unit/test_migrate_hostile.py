"""`havip import-keepalived` against hostile and broken input (issue 9, finding 7): clear
messages and exit status 2, never a traceback; keepalived's own 28 real configurations
still import; a seeded mutation fuzzer over them finds no escaping exception."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from havip import config
from havip.cli import main
from havip.migrate import convert, render
from havip.migrate.syntax import MAX_DEPTH, parse_conf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLES = sorted((FIXTURES / "keepalived-samples").glob("keepalived.conf.*"))
REAL = SAMPLES + sorted((FIXTURES / "seed").glob("*/keepalived.conf"))


def run(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["import-keepalived", *map(str, args)])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, res.output


def test_the_28_real_configurations_are_all_here():
    assert len(REAL) == 28


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.parent.name + "/" + p.name)
def test_real_configurations_import_without_an_error(path, tmp_path):
    code, out = run(path, "--out", tmp_path, "--partial")
    assert code in (0, 1), out
    assert "Traceback" not in out and "cannot" not in out.split("note:")[0]


def test_a_latin1_byte_is_a_clear_message(tmp_path):
    conf = tmp_path / "keepalived.conf"
    conf.write_bytes(b"! adresse r\xe9seau\nvrrp_instance VI_1 {\n}\n")
    code, out = run(conf, "--out", tmp_path / "out")
    assert code == 2
    assert out.strip() == (f"{conf}: line 1, column 12: byte 0xe9 is not UTF-8; convert the file first, e.g. "
                           f"iconv -f latin1 -t utf-8 {conf} > keepalived.utf8.conf")
    assert not (tmp_path / "out").exists()


def test_an_unwritable_out_is_a_clear_message(tmp_path):
    conf = FIXTURES / "keepalived-samples" / "keepalived.conf.vrrp"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out = run(conf, "--out", blocker / "sub", "--partial")    # below a file: ENOTDIR, even for root
    assert code == 2
    assert out.strip().splitlines()[-1] == f"{blocker / 'sub'}: cannot write: Not a directory; nothing written"


def test_a_read_only_out_writes_nothing(tmp_path):
    conf = FIXTURES / "keepalived-samples" / "keepalived.conf.vrrp"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / ".vi_2.yaml.tmp").mkdir()    # the second file cannot be written: the first is not left
    code, out = run(conf, "--out", out_dir, "--partial")
    assert code == 2 and "cannot write: Is a directory; nothing written" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [".vi_2.yaml.tmp"]
    (out_dir / "vi_1.yaml").mkdir()
    code, out = run(conf, "--out", out_dir, "--partial", "--force")
    assert code == 2 and out.strip().splitlines()[-1] == f"{out_dir / 'vi_1.yaml'}: cannot write: Is a directory; nothing written"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_deep_braces_are_reported_not_recursed(tmp_path, depth):
    conf = tmp_path / "keepalived.conf"
    conf.write_text("vrrp_instance VI_1 {\n  interface eth0\n" + "x {\n" * depth + "}\n" * depth + "}\n")
    code, out = run(conf, "--out", tmp_path / "out")
    assert code == 1
    assert f"blocks nested more than {MAX_DEPTH} deep; this block is not read" in out
    unclosed = "x {\n" * depth
    nodes, problems = parse_conf(unclosed)
    assert any("never closed" in p for p in problems)


def test_an_unreadable_file_is_a_clear_message(tmp_path):
    code, out = run(tmp_path / "missing.conf")
    assert code == 2 and "does not exist" in out                   # click's own check


# ------------------------------------------------------------------ seeded mutation fuzzer

SEED = 20260309
CASES = 6000


def _mutate(rng: random.Random, text: bytes) -> bytes:
    data = bytearray(text)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:                                         # byte flip
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:                                                # brace insertions
            data[pos:pos] = rng.choice([b"{", b"}", b"{\n", b"}\n", b"{" * rng.randint(2, 200)])
        elif op == 2:                                                # truncation
            del data[pos:]
        elif op == 3:                                                # a line repeated
            start = data.rfind(b"\n", 0, pos) + 1
            end = data.find(b"\n", pos)
            data[start:start] = data[start:end if end >= 0 else len(data)] + b"\n"
        else:                                                        # odd bytes and words
            data[pos:pos] = rng.choice([b"\x00", b"\xe9", b'"', b"'", b"#", b"!", b" 999999999999999999999 ",
                                        b"\r", b"\t", b"<docker id>", b" -1 ", b" nan "])
    return bytes(data)


def test_mutation_fuzzer_over_the_real_configurations():
    """~6,000 mutants: each converts (or is refused as not UTF-8); no exception escapes,
    and whatever havip would reject is listed as untranslated."""
    rng = random.Random(SEED)
    corpus = [p.read_bytes() for p in REAL]
    scripts = {"/etc/keepalived/chk_milvus.sh": (FIXTURES / "seed" / "master" / "chk_milvus.sh").read_text()}
    converted = 0
    for _ in range(CASES):
        data = _mutate(rng, rng.choice(corpus))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue                        # the CLI refuses it with exit 2 (tested above)
        result = convert(text, script_reader=scripts.get)
        converted += 1
        for stem, document in result.configs.items():
            assert render(result, stem).startswith("# havip configuration")
            try:
                config.parse(document, default_instance=stem)
            except config.ConfigError as err:
                assert all(any(p in line for line in result.untranslated) or "CHANGE-ME" in p
                           for p in err.problems)
    assert converted > CASES // 2


@pytest.mark.parametrize("script", ["/dev/zero", "fifo", "big", "nul"])
def test_a_script_that_is_a_device_fifo_or_huge_is_not_read(tmp_path, script):
    # The importer read every script a keepalived.conf names whole: /dev/zero filled the
    # memory (MemoryError), a FIFO waited for a writer forever, a NUL in the name raised.
    import os

    from havip.migrate import MAX_SCRIPT, read_script

    path = {"/dev/zero": "/dev/zero", "fifo": str(tmp_path / "chk.sh"), "big": str(tmp_path / "big.sh"),
            "nul": "/bin/true\x00x"}[script]
    if script == "fifo":
        os.mkfifo(path)
    elif script == "big":
        with open(path, "wb") as f:
            f.truncate(MAX_SCRIPT + 1)         # sparse: no disk used
    assert read_script(path) is None
    conf = tmp_path / "keepalived.conf"
    conf.write_text(f'vrrp_script chk {{\n    script "{path}"\n}}\nvrrp_instance VI_1 {{\n    state MASTER\n'
                    "    interface eth0\n    virtual_router_id 51\n    priority 100\n"
                    "    virtual_ipaddress {\n        198.18.0.50/24\n    }\n    track_script {\n        chk\n    }\n}\n")
    code, out = run(conf, "--out", tmp_path / "out", "--partial")
    assert code in (0, 1) and "Traceback" not in out, out


def test_a_fifo_as_keepalived_conf_is_refused(tmp_path):
    import os

    fifo = tmp_path / "keepalived.conf"
    os.mkfifo(fifo)
    code, out = run(fifo, "--out", tmp_path / "out")
    assert code == 2 and out.strip() == f"{fifo}: cannot read: not a regular file (a FIFO)"
