"""bench/milvus_failover.py without a lab: its arguments, the failback it chooses per Milvus
kind, the fault it gives a hang, and its report rendered from recorded trials."""

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.unit.benchmod import bench_module


@pytest.fixture(scope="module")
def mf():
    with bench_module("milvus_failover", "milvus_failover_under_test") as mod:
        yield mod


# ---------------------------------------------------------------- arguments


def test_the_real_server_is_the_default_and_lite_the_option(mf):
    from havip.lab.milvuslab import KINDS

    assert mf.KINDS == KINDS
    assert mf.parse_args([]).milvus == "standalone"
    assert mf.parse_args(["--milvus", "lite"]).milvus == "lite"
    with pytest.raises(SystemExit):
        mf.parse_args(["--milvus", "cluster"])


def test_vrrp_and_faults_are_checked_when_parsed(mf, capsys):
    args = mf.parse_args(["--vrrp", "3:0.1", "--faults", "2,container killed"])
    assert args.vrrp == (3, 0.1) and args.faults == ("link cut", "container killed")
    assert mf.parse_args([]).faults == mf.FAULTS and mf.parse_args([]).vrrp == (2, 1.0)
    for bad in (["--vrrp", "4:1"], ["--vrrp", "two"], ["--faults", "5"], ["--faults", "power cut"]):
        with pytest.raises(SystemExit):
            mf.parse_args(bad)
    assert "not a fault (0-4" in capsys.readouterr().err


def test_the_names_vs_recipe_imports_are_still_there(mf):
    for name in ("Probe", "_other_labs", "_revision", "_versions", "_others_line", "_git", "PROBE_PERIOD",
                 "PROBE_RPC_TIMEOUT"):
        assert hasattr(mf, name), name


# ---------------------------------------------------------------- failback and faults


def test_without_preemption_every_fault_is_followed_by_havipctl_failover(mf):
    """The standalone configuration (preempt: false) never moves Milvus back by itself."""
    assert all(mf.failback_by_failover(f, preempt=False) for f in mf.FAULTS)
    # milvus-lite's lab preempts: only a host whose Milvus failed holds back.
    assert [f for f in mf.FAULTS if mf.failback_by_failover(f, preempt=True)] == ["container killed", "Milvus hung"]


class FakeHost:
    def __init__(self):
        self.calls = []

    def link_up(self):
        self.calls.append("link_up")


class FakeLab:
    def __init__(self, milvus, preempt):
        from havip.lab.milvuslab import havip_config
        self.milvus = milvus
        cfg = havip_config(110, "unix:///x.sock", Path("/x"), "h1", kind=milvus)
        self.havipds = {"h1": type("D", (), {"config": cfg})()}
        assert self.havipds["h1"].config.get("preempt", True) is preempt
        self.hosts = {"h1": FakeHost()}
        self.started = []

    def start_havip(self, name):
        self.started.append(name)

    def milvus_pid(self, name):
        return 4242

    def container_info(self, name):
        return {"State": {"Pid": 17}}


@pytest.mark.parametrize("milvus, preempt, fault, moved", [
    ("standalone", False, "link cut", True), ("standalone", False, "havip stopped (SIGTERM)", True),
    ("standalone", False, "container killed", True), ("lite", True, "link cut", False),
    ("lite", True, "havip SIGKILL + cleanup", False), ("lite", True, "Milvus hung", True)])
def test_the_repair_moves_milvus_back_by_failover_unless_h1_preempts(mf, milvus, preempt, fault, moved):
    lab = FakeLab(milvus, preempt)
    faults = mf.Faults(lab)
    asked = []
    faults.failover_to_h1 = lambda: asked.append("failover")
    faults.repair(fault)
    assert asked == (["failover"] if moved else [])
    assert lab.hosts["h1"].calls == (["link_up"] if fault == "link cut" else [])
    assert lab.started == (["h1"] if fault.startswith("havip") else [])


def test_a_hang_stops_the_real_server_not_docker_init(mf):
    """The real server's container runs docker-init as PID 1: SIGSTOP goes to `milvus`."""
    assert mf.Faults(FakeLab("standalone", False)).server_pid() == 4242
    assert mf.Faults(FakeLab("lite", True)).server_pid() == 17


# ---------------------------------------------------------------- the report

T0 = datetime(2026, 11, 30, 3, 40, tzinfo=timezone.utc).timestamp()


def ev(at, host, event, **kw):
    ts = datetime.fromtimestamp(T0 + at, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"timestamp": ts, "host": host, "event": event, **kw}


def standalone_kill_trial(mf, n):
    """A container kill as the real server logs it: h2 healthy 11 s after its start."""
    events = [
        ev(0.6, "h1", "health changed", role="master", healthy=False, reason="container check failed 2 times"),
        ev(0.62, "h1", "decision", state="master", reason="milvus checks failed; giving up mastership"),
        ev(0.63, "h1", "transition", **{"from": "master", "to": "fault"}, reason="milvus checks failed",
           apply_ms=1),
        ev(1.27, "h2", "transition", **{"from": "backup", "to": "master"},
           reason="master 198.18.0.11 resigned (priority 0); taking over after the skew time", apply_ms=2),
        ev(1.27, "h2", "vip_added", addresses=["198.18.0.100/24"]),
        ev(3.0, "h2", "session_sweep", outcome="cleared", reason="revoked 3 stale sessions"),
        ev(12.45, "h2", "decision", state="master",
           reason="milvus is serving: container started in 0.08s, Milvus healthy 11.10s later"),
    ]
    outage = {"first_fail": T0 + 0.05, "last_ok": T0 + 0.01, "first_ok": T0 + 14.2, "error": "refused"}
    t = mf.analyse(events, T0, "container killed", outage, {"h1": [(T0 + 0.1, False)], "h2": [(T0 + 1.4, True)]},
                   {})
    t["session_sweeps"] = mf.session_sweeps(events, T0, T0 + 15)
    t["replayed_from"] = 4.0 + n
    back = [ev(20.0, "h2", "decision", state="master",
               reason="master 198.18.0.11 advertises priority 254, above ours 91; stepping down"),
            ev(25.2, "h2", "transition", **{"from": "master", "to": "backup"}, reason="planned", apply_ms=0),
            ev(25.2, "h2", "vip_removed", addresses=["198.18.0.100/24"]),
            ev(25.3, "h1", "vip_added", addresses=["198.18.0.100/24"]),
            ev(36.0, "h1", "decision", state="master",
               reason="milvus is serving: container started in 0.07s, Milvus healthy 10.50s later")]
    t.update(mf.analyse_failback(back, T0 + 18.0))
    t.update({"failback_unavailable": 16.5, "failback_by": "havipctl failover", "overlaps": 0, "trial": n,
              "fault": "container killed", "fault_at": T0, "other_labs": [], "excerpt": ["+ 0 ms  bench   fault"]})
    return t


def test_the_phases_of_a_real_server_takeover(mf):
    t = standalone_kill_trial(mf, 1)
    ph = t["phases"]
    assert ph["detection"] == pytest.approx(0.62, abs=1e-3)          # h1 decides
    assert ph["vip_move"] == pytest.approx(1.27 - 0.002 - 0.62 + 0.002, abs=2e-3)
    assert ph["container_start"] == pytest.approx(12.45 - 11.10 - 1.27, abs=1e-3)
    assert ph["milvus_ready"] == pytest.approx(11.10, abs=1e-3)
    assert ph["client"] == pytest.approx(14.2 - 12.45, abs=1e-3)
    assert ph["total"] == pytest.approx(14.2, abs=1e-3)
    assert t["failback_h2_stop"] == pytest.approx(5.2, abs=1e-3)      # the stop grace
    assert t["failback_h1_start"] == pytest.approx(10.8, abs=1e-3)
    assert t["session_sweeps"] == [{"at": 3.0, "outcome": "cleared", "reason": "revoked 3 stale sessions"}]


def standalone_dump(mf):
    from havip.lab.milvuslab import milvus_settings
    results = [standalone_kill_trial(mf, 1), standalone_kill_trial(mf, 2)]
    info = {"errors": [], "vrrp": [2, 1.0], "milvus": "standalone", "settings": milvus_settings("standalone"),
            "probe": {"period": 0.05, "timeout": 1.0}, "preempt": False, "milvus_version": "2.3.5",
            "versions": "dockerd 20.10.24+dfsg1, milvus-lite 3.2.2, pymilvus 3.0.2", "sampler": "100 samples",
            "overlaps": [], "samples": 100}
    meta = {"machine": "2 cores, AMD EPYC", "revision": "havip abc1234", "commit": "def5678", "load": "1 1 1",
            "trials": 2, "faults": ["container killed"], "when": "2026-11-30 03:40 UTC"}
    return {"results": results, "info": info, "meta": meta}


def test_the_report_of_a_real_server_run_names_it_and_has_no_lite_wording(mf, tmp_path, capsys):
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(standalone_dump(mf), default=str))
    out = tmp_path / "report.md"
    mf.main(["--from-json", str(path), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# Benchmarks: Milvus failover in the lab (Milvus 2.3.5 standalone, VRRP v2 1 s)")
    assert "Measured 2026-11-30 03:40 UTC on 2 cores, AMD EPYC; havip abc1234 (HEAD def5678), Milvus 2.3.5 " \
           "standalone (PyPI `milvus` wheel in the lab image), dockerd 20.10.24+dfsg1, pymilvus 3.0.2;" in text
    assert "`bench/milvus_failover.py --milvus standalone --vrrp 2:1 --trials 2` (`make bench`)" in text
    assert "milvus-lite" not in text
    assert "every 50 ms (pymilvus, 1 s deadline per attempt" in text
    assert "timeout 1 s, rise 2, fall 2; start_timeout 60 s; docker stop grace 5 s" in text
    assert "`havipctl failover` on h1, after every fault" in text and "preempt: false" in text
    assert "flushes once" in text
    assert "h2's server replayed from a checkpoint 5.5 (5.0..6.0) s old at the fault (median (min..max) of 2" in text
    # the summary row: median (min..max) of the two trials, ms
    assert "| container killed | 620 (620..620) | 650 (650..650) | 80 (80..80) | 11100 (11100..11100) | " \
           "1750 (1750..1750) | 14200 (14200..14200) |" in text
    assert "| container killed | 620 / 620 | 1100 | yes | 2480 / 2480 | 200 | **no** | 730 / 730 |" in text
    assert "so detection is uniformly spread over [0.5, 1] s" in text      # 620 ms: the check interval's
    assert "Clients lose Milvus for 16500 ms median" in text and "The stop is the whole grace" in text
    assert "stale session sweep revoked the old server's sessions in 2 of 2 start(s)" in text


def test_the_report_of_a_lite_run_keeps_its_preemption_wording(mf):
    d = standalone_dump(mf)
    from havip.lab.milvuslab import milvus_settings
    d["info"].update(milvus="lite", settings=milvus_settings("lite"), probe={"period": 0.02, "timeout": 0.5},
                     preempt=True)
    for r in d["results"]:
        r.pop("session_sweeps")
    text = mf.render(d["results"], d["info"], 2, ("container killed",), "m", "l", "havip x", "2026-11-30 03:40 UTC")
    assert text.startswith("# Benchmarks: Milvus failover in the lab (milvus-lite, VRRP v2 1 s)")
    assert "milvus-lite 3.2.2" in text and "--milvus lite" in text and "`MILVUS=lite`" in text
    assert "by preemption after the link and havip faults" in text
    assert "Milvus standalone" not in text


def test_a_dump_from_before_the_option_renders_as_the_lite_run_it_was(mf):
    """Dumps written before --milvus carry no kind: they measured milvus-lite."""
    k = mf.kind_of({"vrrp": [2, 1.0]})
    assert k["kind"] == "lite" and k["preempt"] is True and k["probe"] == {"period": 0.02, "timeout": 0.5}


def test_the_replay_point_comes_from_the_new_servers_log(mf):
    """The oldest channel checkpoint a starting server logs it seeks to (Milvus 2.3.5's line)."""
    from havip.lab.standalone import replayed_from

    log = ('[2026/11/30 03:40:14.872 +00:00] [INFO] [datacoord/handler.go:299] ["channel seek position set from '
           'channel checkpoint meta"] [channel=by-dev-rootcoord-dml_0v0] [posTs=1] [posTime=2026/11/30 03:39:55.5 +00:00]\n'
           '[2026/11/30 03:40:15.001 +00:00] [INFO] [datacoord/handler.go:299] ["channel seek position set from '
           'channel checkpoint meta"] [channel=by-dev-rootcoord-dml_1v0] [posTs=2] [posTime=2026/11/30 03:39:58 +00:00]\n')
    assert replayed_from(log, T0) == 4.5
    assert replayed_from("no such line", T0) is None

    class Lab:                 # an engine that cannot be reached gives no evidence, not an error
        def api(self, host, timeout):
            raise OSError("engine down")
    assert mf.replayed_from(Lab(), "h2", T0) is None


def test_a_kill_seen_by_dockers_die_event_is_explained_as_such(mf):
    """Detection under one check interval: the die event, not two polls (havip.checks.watch)."""
    d = standalone_dump(mf)
    for r in d["results"]:
        r["phases"]["detection"] = 0.077
    text = mf.render(d["results"], d["info"], 2, ("container killed",), "m", "l", "havip x", "2026-11-30 03:40 UTC")
    assert "Detection 77 ms median (max 77): Docker's die event runs the checks at once" in text
    assert "uniformly spread" not in text


DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("name", ["benchmarks-milvus", "benchmarks-milvus-v3"])
def test_the_committed_real_server_reports_render_from_their_recorded_dumps(mf, name):
    """docs/NAME.md was written from docs/NAME.json: the dump renders to the same header and
    the same figures, on the real server, with no milvus-lite wording."""
    dump = json.loads((DOCS / f"{name}.json").read_text())
    text = mf.report_from_dump(dump)
    committed = (DOCS / f"{name}.md").read_text()
    assert dump["info"]["milvus"] == "standalone" and "milvus-lite" not in text
    assert text.splitlines()[:3] == committed.splitlines()[:3]           # title, then date, machine, commit

    def figures(report):
        """The summary table's rows: every phase of every fault, median (min..max)."""
        return [ln for ln in report.splitlines() if ln.startswith("| ") and any(
            ln.startswith(f"| {f} | ") for f in mf.FAULTS) and ln.count("(") >= 8]
    assert len(figures(text)) == len(dump["meta"]["faults"]) and figures(text) == figures(committed)
