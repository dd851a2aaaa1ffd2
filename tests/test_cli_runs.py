"""Run files recorded by real (tiny) training, shared by the CLI tests, and a test rule.

The other CLI test modules import the fixtures from here. Training happens once
per test session; the files are copied into each test's own folder, so a test
that writes next to them cannot disturb another.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest

from diagnose.cli.common import load_runs
from diagnose.rules import base
from diagnose.rules.base import Category, Rule, Severity, Threshold

STEPS = 120


@functools.cache
def _recorded(folder: Path) -> dict[str, Path]:
    import torch
    from torch import nn

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, lr in (("healthy", 0.05), ("diverging", 8.0)):
        torch.manual_seed(0)
        x = torch.randn(STEPS * 32, 16)
        y = x[:, :4].argmax(1)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        lines = []
        for step in range(1, STEPS + 1):
            batch = slice((step - 1) * 32, step * 32)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
            lines.append({"step": step, "loss": loss.item(), "lr": lr})
            if step % 20 == 0:
                lines.append({"step": step, "val_loss": loss.item()})
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(line) + "\n" for line in lines))
    return paths


@pytest.fixture
def runs(tmp_path_factory, tmp_path) -> dict[str, Path]:
    """``{"healthy": path, "diverging": path}``: fresh copies of the recorded runs."""
    recorded = _recorded(tmp_path_factory.getbasetemp() / "recorded-runs")
    return {name: Path(shutil.copy(path, tmp_path / path.name)) for name, path in recorded.items()}


class FinalAboveFirst(Rule):
    """
    ## What it detects
    A run whose last loss is above its first (test rule).
    ## Why it matters
    It lets the CLI tests count on a finding.
    ## How it decides
    Last loss > ratio x first loss, or a non-finite last loss.
    ## What to do
    Nothing; it only exists in tests.
    """

    code = "TST001"
    name = "test-final-above-first"
    title = "Loss ends above where it started"
    category = Category.OPTIMIZATION
    severity = Severity.ERROR
    requires = ("loss",)
    thresholds = (Threshold("ratio", 1.0, "last/first loss ratio that counts", source="test"),)

    def check(self, run, t):
        loss = run.series("loss", keep_nan=True)
        first, last = float(loss.iloc[0]), float(loss.iloc[-1])
        if not last <= t["ratio"] * first:
            yield self.finding(run, message=f"loss went from {first:.3g} to {last:.3g}", onset=loss.index[0],
                               end=loss.index[-1], evidence={"first": first, "last": last},
                               causes=["a learning rate far too high"], fixes=["lower the learning rate"])


@pytest.fixture
def test_rule(monkeypatch):
    """Registers `FinalAboveFirst` for one test."""
    base.all_rules()
    monkeypatch.setitem(base._REGISTRY, FinalAboveFirst.code, FinalAboveFirst)
    return FinalAboveFirst


def test_recorded_runs_are_readable_and_differ(runs, test_rule):
    healthy, diverging = (load_runs([runs[name]])[0] for name in ("healthy", "diverging"))
    assert healthy.n_steps == diverging.n_steps == STEPS
    assert healthy.series("loss").iloc[-1] < healthy.series("loss").iloc[0]
    assert not diverging.series("loss").iloc[-1] < diverging.series("loss").iloc[0]
