"""The watch on a model under torch.compile (issue 12).

Backend ``aot_eager``: the same Dynamo graph capture and AOTAutograd backward as the default
inductor backend (hooks and autograd see exactly what they see under inductor), without inductor's
C++ compilation, which takes minutes on a loaded two-core machine. ``fullgraph=True`` makes any
graph break the watch caused an error in the user's loop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import diagnose

NAN_STEP = 6
CLIP = 0.01  # far below the gradient norm: a clipped norm would show


class Rooted(nn.Module):
    """sqrt of the input: NaN for a negative one, inside the compiled graph."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.act, self.last = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.act(self.first(torch.sqrt(x))))


def _train(path: Path | None, watch_first: bool = False, steps: int = 8) -> tuple[dict, list[float]]:
    """Train a compiled `Rooted`, watched (compiled first, or watched first) or not; returns its weights
    before the NaN step (after it they are NaN) and the norms clip_grad_norm_ reported."""
    torch.manual_seed(0)
    model = Rooted()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = diagnose.watch(model, optimizer, path) if path is not None and watch_first else None
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    if path is not None and not watch_first:
        watch = diagnose.watch(compiled, optimizer, path)
    x, y = torch.rand(32, 8, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 3
    norms = []
    for step in range(1, steps + 1):
        inputs = x.clone()
        if step == NAN_STEP:
            inputs[0, 0] = -1.0
            weights = {key: value.clone() for key, value in model.state_dict().items()}
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(compiled(inputs), y)
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), CLIP)))
        optimizer.step()
        if watch is not None:
            watch.log(loss=loss)
    if watch is not None:
        watch.close()
    return weights, norms


@pytest.fixture(scope="module")
def compiled_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("compiled")
    plain, _ = _train(None)
    watched, norms = _train(folder / "watched.jsonl")
    _, norms_first = _train(folder / "watched_first.jsonl", watch_first=True)
    return {
        "plain": plain,
        "watched": watched,
        "norms": norms,
        "norms_first": norms_first,
        "run": diagnose.load(folder / "watched.jsonl"),
        "run_first": diagnose.load(folder / "watched_first.jsonl"),
    }


def test_training_a_compiled_model_is_unchanged_by_the_watch(compiled_runs) -> None:
    """Asserts: fullgraph=True compiles and trains with the watch attached (no graph break), and the
    weights after training are bit-identical to those trained without the watch."""
    plain, watched = compiled_runs["plain"], compiled_runs["watched"]
    assert all(torch.equal(plain[key], watched[key]) for key in plain)


@pytest.mark.parametrize("which", ["run", "run_first"])
def test_the_report_says_activations_are_unavailable_under_compile(compiled_runs, which) -> None:
    """Asserts: one `compiled` event at step 1, the reading line in the report, no probe failure, and no
    activation statistics made up for the modules inside the graph (the model output's are real)."""
    run = compiled_runs[which]
    events = run.events
    assert events.loc[events["event"] == "compiled", "step"].tolist() == [1]
    assert any(w.startswith("activations unavailable under torch.compile") for w in run.warnings)
    assert not (events["event"] == "probe_error").any()
    layers = run.layers
    measured = set(layers.loc[layers["act_rms"].notna(), "module"]) if "act_rms" in layers else set()
    assert measured <= {"(output)"}


@pytest.mark.parametrize("which", ["run", "run_first"])
def test_a_nan_inside_the_compiled_graph_is_attributed_to_the_compiled_model(compiled_runs, which) -> None:
    """Asserts: the NaN made by sqrt inside the graph is put in the forward pass of the compiled model,
    not in the loss computation, and NF001 says so."""
    run = compiled_runs[which]
    origin = run.events[run.events["event"] == "nonfinite"]
    assert origin[["step", "where", "module"]].values.tolist() == [[NAN_STEP, "forward", "(model)"]]
    finding = next(f for f in diagnose.analyze(run) if f.code == "NF001")
    assert "loss computation" not in finding.message and "(model)" in str(finding.module)


def test_the_operation_search_says_it_cannot_see_inside_the_graph(compiled_runs) -> None:
    """Asserts: the autograd-graph search names the compiled graph instead of blaming the inputs."""
    ops = compiled_runs["run"].events.query("event == 'nonfinite_op'")
    assert ops["problem"].tolist() == ["made inside a torch.compile graph, whose operations autograd cannot see"]


def test_gradient_norms_are_read_before_clipping_under_compile(compiled_runs) -> None:
    """Asserts: recorded grad_norm equals clip_grad_norm_'s pre-clip value at every finite step; watched
    before compiling, the first step has no norm rather than the clipped one."""
    recorded = compiled_runs["run"].series("grad_norm")
    assert recorded.loc[: NAN_STEP - 1].tolist() == pytest.approx(compiled_runs["norms"][: NAN_STEP - 1], rel=1e-6)
    first = compiled_runs["run_first"].series("grad_norm")
    assert list(first.loc[: NAN_STEP - 1].index) == list(range(2, NAN_STEP))
    assert first.loc[: NAN_STEP - 1].tolist() == pytest.approx(compiled_runs["norms_first"][1 : NAN_STEP - 1], rel=1e-6)
