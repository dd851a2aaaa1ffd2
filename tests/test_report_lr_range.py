"""The preflight learning-rate range test is drawn as loss against learning rate, with its suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import diagnose
from diagnose.report.plots import figure
from diagnose.rules.engine import analyze


@pytest.fixture(scope="module")
def preflight_run(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    x = torch.randn(128, 10)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    path = tmp_path_factory.mktemp("preflight") / "preflight.jsonl"
    loader = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    diagnose.preflight(
        model,
        nn.CrossEntropyLoss(),
        loader,
        lambda p: torch.optim.Adam(p, lr=1e-3),
        {"task": "binary", "num_classes": 2},
        path=path,
    )
    return path


def test_range_test_panel_plots_loss_against_learning_rate_with_the_suggestion(preflight_run: Path) -> None:
    analysis = analyze(diagnose.load(preflight_run))
    suggestion = next(f for f in analysis.findings if f.code == "PRE011").evidence["suggested"]
    axes = figure([analysis]).axes
    range_axes = [ax for ax in axes if ax.get_xlabel() == "learning rate"]
    assert len(range_axes) == 1
    ax = range_axes[0]
    assert ax.get_xscale() == "log"
    vertical_at = {line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1}
    assert suggestion in vertical_at
    curve = next(line for line in ax.get_lines() if line.get_label() == "lr_test_smoothed")
    assert min(curve.get_xdata()) < 1e-5 < 1 < max(curve.get_xdata())  # the whole exponential sweep


def test_html_report_of_a_preflight_run_embeds_the_plot(preflight_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from diagnose.cli.app import app

    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(preflight_run), "--format", "html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "data:image/png;base64," in html and "PRE011" in html
