"""Sample runs (recorded by real training, in sample_runs/) shared by the CLI tests, and a test rule.

The other CLI test modules import these fixtures. Each test gets fresh copies
of the run files in its own folder, so a test that writes next to them cannot
touch the committed samples or disturb another test.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from diagnose.cli.common import load_runs
from diagnose.rules import base
from diagnose.rules.base import Category, Rule, Severity, Threshold

SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs" / "runs"
# A healthy classifier, and one whose loss turns NaN mid-run.
CHOSEN = {"healthy": "healthy_mlp.jsonl", "broken": "nan_log.jsonl"}


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    """``{"healthy": path, "broken": path}``: fresh copies of two sample runs."""
    return {key: Path(shutil.copy(SAMPLES / name, tmp_path / name)) for key, name in CHOSEN.items()}


def run_name(path: Path) -> str:
    return load_runs([path])[0].name


class FinalAboveFirst(Rule):
    """
    ## What it detects
    A run whose last loss is above its first (test rule).
    ## Why it matters
    It lets the CLI tests count on a finding whatever the real rules decide.
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


def test_the_chosen_samples_fit_the_test_rule(runs):
    healthy, broken = (load_runs([runs[key]])[0].series("loss", keep_nan=True) for key in ("healthy", "broken"))
    assert healthy.iloc[-1] < healthy.iloc[0]
    assert math.isnan(broken.iloc[-1])
