"""`diagnose demo`: real training with the probes, both run files and an HTML report written."""

from __future__ import annotations

from typer.testing import CliRunner

from diagnose.cli.app import app
from diagnose.cli.common import load_runs
from diagnose.demo import RUNS
from diagnose.report.summary import is_healthy, verdict
from diagnose.rules import RuleConfig, analyze


def test_demo_trains_both_runs_and_reports(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["demo", "--out", str(out), "--steps", "60"])
    assert result.exit_code == 0, result.output
    paths = [out / f"{run.name}.jsonl" for run in RUNS]
    runs = load_runs(paths)
    assert [r.name for r in runs] == [run.name for run in RUNS]
    assert all(r.n_steps == 60 and not r.layers.empty for r in runs)
    analyses = [analyze(r, RuleConfig()) for r in runs]
    assert verdict(analyses) in result.stdout
    faulty = next(a for a in analyses if a.run.name == RUNS[1].name)
    assert not is_healthy(faulty)
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_demo_refuses_a_file_as_its_folder(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--out", str(target)])
    assert result.exit_code == 2 and target.read_text() == "keep me"
