"""bench/vs_recipe.py runs the seed's recipe changed only as its RECIPE_CHANGES list says."""

import difflib
import subprocess

import pytest

from tests.unit.benchmod import bench_module


@pytest.fixture(scope="module")
def vs_recipe():
    with bench_module("vs_recipe") as mod:
        yield mod


def test_the_rendered_recipe_differs_from_the_seed_only_where_listed(vs_recipe, tmp_path):
    files = vs_recipe.render_recipe(tmp_path)
    seed = {p.relative_to(vs_recipe.SEED).as_posix(): p.read_text() for p in vs_recipe.SEED.glob("*/*")}
    assert set(files) == set(seed) == {"master/keepalived.conf", "master/chk_milvus.sh",
                                       "backup/keepalived.conf", "backup/start_docker.sh",
                                       "backup/stop_docker.sh"}
    allowed = {(f, new.replace("{dir}", str(tmp_path))) for f, _old, new, _why in vs_recipe.RECIPE_CHANGES}
    for rel in files:
        added = [ln[1:] for ln in difflib.ndiff(seed[rel].splitlines(), files[rel].splitlines())
                 if ln.startswith("+ ")]
        for line in added:        # every changed line carries one of the listed replacements
            assert any(f == rel and new.strip() in line for f, new in allowed), (rel, line)
    # The one fix beyond names and paths: the backup's stop script stops its Milvus.
    assert "docker start" in seed["backup/stop_docker.sh"]
    assert "docker start" not in files["backup/stop_docker.sh"]
    assert "docker stop milvus" in files["backup/stop_docker.sh"]
    assert (tmp_path / "backup" / "stop_docker.sh").stat().st_mode & 0o111
    # Nothing tuned: the timers, priorities and weight are the seed's.
    for rel in ("master/keepalived.conf", "backup/keepalived.conf"):
        keep = [ln for ln in seed[rel].splitlines() if any(k in ln for k in
                ("interval", "weight", "priority", "virtual_router_id", "auth_pass", "state "))]
        assert keep and all(ln in files[rel].splitlines() for ln in keep)


def test_keepalived_accepts_the_rendered_recipe_but_for_script_security(vs_recipe, tmp_path):
    """keepalived 2.2.7 parses both files; its only complaint (exit 6 on the master's) is
    the one vs_recipe accepts: scripts run as root without enable_script_security."""
    vs_recipe.render_recipe(tmp_path)
    for role in ("master", "backup"):
        res = subprocess.run(["keepalived", "--config-test", "-f", str(tmp_path / role / "keepalived.conf"),
                              "-i", f"vsr-{role}"], capture_output=True, text=True, timeout=30)
        said = {ln.strip() for ln in (res.stdout + res.stderr).splitlines() if ln.strip()}
        assert res.returncode == 0 or said == {vs_recipe.SECURITY_WARNING}, (role, res.returncode, said)


def _trial(system, fault, t0, first_fail, first_ok, overlap=()):
    end = t0 + 40
    probe = [{"at": t0 - 3, "ok": True, "err": ""}, {"at": t0 + first_fail, "ok": False, "err": "refused"}]
    if first_ok is not None:
        probe.append({"at": t0 + first_ok, "ok": True, "err": ""})
    return {"system": system, "fault": fault, "trial": 1, "t0": t0, "t_repair": None, "t_end": end,
            "recovered_before_repair": first_ok is not None,
            "outage": {"first": (first_ok if first_ok is not None else end - t0), "ended": first_ok is not None,
                       "failing_total": (first_ok or 40) - first_fail, "first_error": "refused",
                       "errors": ["refused"], "first_fail": first_fail},
            "acked": 100, "lost": [], "overlap_windows": [(t0 + a, t0 + b) for a, b in overlap],
            "probe": probe, "traffic": [], "docker": {"h1": [[t0 + 0.1, False]], "h2": [[t0 + 3, True]]},
            "docker_before": {"h1": True, "h2": False}, "vip": [[t0 + 3, ["h2"]]], "vip_before": ["h1"],
            "other_labs": []}


def test_the_report_and_its_timeline_from_trials(vs_recipe, tmp_path):
    """The report states each figure against its target, and a plot is drawn per fault."""
    results = [_trial("recipe", "container killed", 1000.0, 0.5, 20.0, overlap=[(5, 9.02)]),
               _trial("havip", "container killed", 2000.0, 0.5, 8.0)]
    svg = tmp_path / "t.svg"
    assert vs_recipe.plot(results, "container killed", svg)
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    text = vs_recipe.render(results, {"errors": []}, 1, ("container killed",), "2 cores", "1 1 1", "havip x",
                            {"container killed": "t.svg"}, "2026-01-01 00:00 UTC")
    assert "| container killed | recipe | 1 | 20.0 | 19.5 | 0 (of 100) | 1 (4.1 s) |" in text
    assert "havip's outage is 0.40 x the recipe's" in text and "**met**" in text
    assert "![container killed: recipe and havip](t.svg)" in text


def test_runs_of_other_faults_merge_into_one_report(vs_recipe):
    """--from-json a,b: the trials of two runs side by side, each run's load and trial count kept."""
    def dump(fault, n, load):
        return {"results": [_trial("havip", fault, 1000.0 + i, 0.5, 8.0) for i in range(n)],
                "info": {"errors": [f"{fault} err"]},
                "meta": {"trials": n, "faults": [fault], "when": "2026-01-01 00:00 UTC", "load": load}}
    results, info, meta = vs_recipe.merge_dumps([dump("link cut", 2, "5 5 5"), dump("container killed", 3, "4 4 4")])
    assert len(results) == 5 and info["errors"] == ["link cut err", "container killed err"]
    assert meta["faults"] == ["container killed", "link cut"]           # FAULTS order
    assert meta["trials"] == "2 --faults 2 / 3 --faults 0"
    assert "2 x link cut at 2026-01-01 00:00 UTC (load 5 5 5)" in meta["load"]


def test_the_container_kill_finding_says_what_the_session_sweep_did(vs_recipe):
    rs = [{"session_sweeps": [{"at": 3.0, "outcome": "cleared", "reason": "revoked ..."}]},
          {"session_sweeps": [{"at": 4.0, "outcome": "gave_up", "reason": "etcd never answered"}]}, {}]
    text = vs_recipe.sweeps_sentence(rs)
    assert "its session sweep revoked them in 1 of 2 start(s) (median +3.0 s after the fault; other outcomes: " \
           "gave_up)" in text
    assert vs_recipe.sweeps_sentence([{}]) == ""


LOG = ('[2026/11/30 02:20:14.872 +00:00] [INFO] [datacoord/handler.go:299] ["channel seek position set from '
       'channel checkpoint meta"] [channel=by-dev-rootcoord-dml_0_470811945364357142v0] '
       '[posTs=470811981713244162] [posTime=2026/11/30 02:19:39.265 +00:00]\n'
       '[2026/11/30 02:20:15.001 +00:00] [INFO] [datacoord/handler.go:299] ["channel seek position set from '
       'channel checkpoint meta"] [channel=by-dev-rootcoord-dml_0_470811945364357142v0] '
       '[posTs=470811981713244163] [posTime=2026/11/30 02:20:10 +00:00]\n')


def test_the_replay_point_is_read_from_milvus_own_log_line(vs_recipe):
    """The checkpoint a new server replays from (Milvus 2.3.5's datacoord line, as logged)."""
    from datetime import datetime, timezone

    from havip.lab.standalone import SEEK_RE, seek_time

    times = [seek_time(t) for t in SEEK_RE.findall(LOG)]
    assert times == [datetime(2026, 11, 30, 2, 19, 39, 265000, timezone.utc).timestamp(),
                     datetime(2026, 11, 30, 2, 20, 10, tzinfo=timezone.utc).timestamp()]
    assert seek_time("yesterday") is None


def test_the_report_says_why_trials_flush_and_what_they_replayed(vs_recipe):
    rs = [{"replayed_from": {"h2": 5.6}, "checkpoint": "flushed"}, {"replayed_from": {"h2": 6.0}}]
    text = " ".join(vs_recipe.checkpoint_paragraph(rs, True))
    assert "flushes once before its writes, for both systems" in text
    assert "5.8 (5.6..6.0) s old" in text
    aged = " ".join(vs_recipe.checkpoint_paragraph([{"replayed_from": {}}], False))
    assert "--checkpoint aged" in aged and "s old" not in aged
