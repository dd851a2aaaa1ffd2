"""The preflight experiments share a time budget: one that reaches its end stops, says so, and is not judged."""

from __future__ import annotations

import time

import torch
from test_preflight import META, adam, clusters, mlp
from torch import nn

from diagnose.probes.preflight import preflight
from diagnose.probes.preflight.runner import time_spent


class Slow(nn.Module):
    """The MLP of test_preflight, each forward made 20 ms long."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return self.inner(x)


def test_a_small_budget_cuts_the_experiments_and_says_what_was_cut(tmp_path) -> None:
    # 200 steps of overfitting alone take 4 s here: the budget must cut it.
    analysis = preflight(
        Slow(), nn.CrossEntropyLoss(), clusters(), adam, META, path=tmp_path / "pf.jsonl", budget_s=0.5
    )
    events = analysis.run.events
    by_budget = events["skipped"].fillna("").str.contains("time budget").to_numpy()
    order = events["experiment"].tolist()
    cut = [name for name, hit in zip(order, by_budget, strict=True) if hit]
    assert "overfit" in cut and cut == order[order.index(cut[0]) :]  # once spent, every later experiment is cut
    first = events.loc[by_budget, "skipped"].iloc[0]
    assert "ran out after" in first or "spent before this experiment" in first
    assert not {"PRE008", "PRE009", "PRE010", "PRE011"} & {f.code for f in analysis.findings}
    assert "PRE008" in {code for code, _ in analysis.not_evaluated}
    line = time_spent(analysis.run)
    assert "of their 0.5 s budget" in line and line.endswith("cut by the budget: " + ", ".join(cut))


def test_a_budget_large_enough_runs_every_check(tmp_path) -> None:
    analysis = preflight(mlp(), nn.CrossEntropyLoss(), clusters(), adam, META, path=tmp_path / "pf.jsonl", budget_s=600)
    assert analysis.run.events["skipped"].isna().all() if "skipped" in analysis.run.events else True
    assert "cut" not in time_spent(analysis.run)
