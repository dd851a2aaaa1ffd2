"""Sample runs and a test rule shared by the CLI and report tests."""

from __future__ import annotations

from pathlib import Path

from sample_files import EXAMPLES, recorded_runs

from diagnose.cli.common import load_runs
from diagnose.rules.base import Category, Rule, Severity, Threshold

# A healthy classifier, and one whose loss turns NaN mid-run.
CHOSEN = {"healthy": EXAMPLES / "healthy" / "mlp.jsonl", "broken": EXAMPLES / "NF001" / "bad.jsonl"}
SAMPLES = recorded_runs()


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
            yield self.finding(
                run,
                message=f"loss went from {first:.3g} to {last:.3g}",
                onset=loss.index[0],
                end=loss.index[-1],
                evidence={"first": first, "last": last},
                causes=["a learning rate far too high"],
                fixes=["lower the learning rate"],
            )
