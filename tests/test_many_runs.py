"""Many runs: folders analysed in worker processes in file order; figures and pages that summarise."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from test_report_render import analysis, finding, make_run
from typer.testing import CliRunner

from diagnose.cli import common
from diagnose.cli.app import app
from diagnose.readers import load_all
from diagnose.report import html, plots, summary
from diagnose.rules.base import Severity
from diagnose.rules.config import RuleConfig


def write_folder(folder: Path, count: int) -> Path:
    folder.mkdir()
    for index in range(count):
        lines = [{"kind": "step", "step": step, "loss": 2.0 / step + 0.01 * index} for step in range(1, 41)]
        (folder / f"run-{index:02d}.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (folder / "broken.jsonl").write_text('{"kind": "meta", "name": "nothing"}\n')
    return folder


def summarised(analyses) -> list[tuple[str, list[str], list[str]]]:
    return [(a.run.name, a.codes, a.run.warnings) for a in analyses]


def test_a_folder_analysed_in_workers_gives_what_a_serial_pass_gives(tmp_path, monkeypatch) -> None:
    folder = write_folder(tmp_path / "sweep", 12)
    monkeypatch.setattr(common, "PARALLEL_FROM", 2)
    parallel = common.analyze_paths([folder], None, RuleConfig())
    monkeypatch.setattr(common, "PARALLEL_FROM", 10**9)
    serial = common.analyze_paths([folder], None, RuleConfig())
    assert summarised(parallel) == summarised(serial)
    assert [a.run.name for a in parallel] == [f"run-{i:02d}" for i in range(12)]
    assert any("skipped broken.jsonl" in w for w in parallel[0].run.warnings)


def test_workers_send_each_run_back_with_its_coverage_and_summary_worked_out(tmp_path, monkeypatch) -> None:
    folder = write_folder(tmp_path / "sweep", 3)
    analysed, _ = common._analyse_source((folder, folder / "run-01.jsonl", "jsonl", None, RuleConfig()))
    run = pickle.loads(pickle.dumps(analysed[0].run))  # as a worker process sends it
    fresh = load_all(folder / "run-01.jsonl")[0]
    monkeypatch.setattr(summary, "_coverage", lambda run: pytest.fail("coverage computed again"))
    monkeypatch.setattr(summary, "_summarize", lambda run: pytest.fail("summary computed again"))
    with run.reading():
        kept = summary.coverage(run), summary.summarize(run)
    assert (summary.coverage(run), summary.summarize(run)) == kept  # outside a reading block too (plot)
    monkeypatch.undo()
    assert kept == (summary.coverage(fresh), summary.summarize(fresh))
    with pytest.raises(RuntimeError):
        fresh.settle([("coverage",)])  # only what a reading block found can be kept


def many(count: int) -> list:
    found = []
    for index in range(count):
        run = make_run(f"run-{index:03d}", losses=np.geomspace(2, 0.1 + index / 100, 60))
        findings = [finding(run=run.name, severity=Severity.WARNING)] if index % 5 == 0 else []
        found.append(analysis(run, *findings))
    return found


def test_a_figure_of_many_runs_is_a_bounded_grid_of_the_worst_first(monkeypatch) -> None:
    monkeypatch.setattr(plots, "SMALL_MULTIPLES", 8)
    analyses = many(30)
    fig = plots.figure(analyses)
    titled = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert titled == [f"run-{i:03d}" for i in (0, 5, 10, 15, 20, 25)] + ["run-001", "run-002"]  # warnings first
    assert "30 runs; the 8 worst shown" in fig._suptitle.get_text()
    assert plots.image_bytes(fig).startswith(b"\x89PNG")


def test_a_page_of_many_runs_lists_every_run_and_details_the_worst(monkeypatch) -> None:
    monkeypatch.setattr(plots, "SMALL_MULTIPLES", 8)
    monkeypatch.setattr(html, "FULL_SECTIONS", 3)
    analyses = many(30)
    page = html.render_html(analyses)
    table_rows = re.findall(r"<tr><td>(run-\d+)</td>", page)
    assert sorted(table_rows) == sorted(a.run.name for a in analyses)
    assert re.findall(r"<h2>(run-\d+)</h2>", page) == ["run-000", "run-005", "run-010"]
    assert page.count("<img ") == 4  # the small multiples, then each detailed run


def test_a_page_of_many_runs_is_the_same_whether_its_figures_are_drawn_in_workers_or_here(monkeypatch) -> None:
    monkeypatch.setattr(plots, "SMALL_MULTIPLES", 4)
    monkeypatch.setattr(html, "FULL_SECTIONS", 3)
    analyses = many(12)
    monkeypatch.setattr(html, "PARALLEL_FIGURES", 2)
    in_workers = html.render_html(analyses)
    monkeypatch.setattr(html, "PARALLEL_FIGURES", 10**9)
    assert in_workers == html.render_html(analyses)


def test_plot_of_many_runs_says_in_one_line_that_it_summarises(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(plots, "SMALL_MULTIPLES", 8)
    folder = write_folder(tmp_path / "sweep", 12)
    result = CliRunner().invoke(app, ["plot", str(folder), "-o", str(tmp_path / "runs.png")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "small multiples" in line]
    assert notes == ["12 runs (more than 6): the figure shows the loss of the 8 worst as small multiples, worst first"]
    assert plots.summary_note(plots.FULL_COLUMNS) is None


def test_rank_files_are_found_by_their_own_base_name_however_it_is_spelled(tmp_path) -> None:
    # The sibling search names the base in its pattern (one pass over a folder of many runs instead
    # of a test of every file there): characters a pattern reads specially are taken as they are.
    lines = "\n".join(json.dumps({"kind": "step", "step": s, "loss": 1.0 / s}) for s in range(1, 9)) + "\n"
    for name in ("exp[1].rank0", "exp[1].rank1", "exp1.rank0", "exp1.rank2", "exp*.rank3"):
        (tmp_path / f"{name}.jsonl").write_text(lines)
    assert sorted(load_all(tmp_path / "exp[1].jsonl")[0].ranks) == [0, 1]
    assert sorted(load_all(tmp_path / "exp1.rank0.jsonl")[0].ranks) == [0, 2]
    assert sorted(load_all(tmp_path / "exp*.jsonl")[0].ranks) == [3]
