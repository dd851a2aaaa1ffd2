"""Preflight: each check catches its planted bug on a real small model, a correct model passes,
the user's model, optimizer and random state are left alone, and the CLI works."""

from __future__ import annotations

import copy
import textwrap

import pytest
import torch
from sample_files import scenario_module
from torch import nn
from typer.testing import CliRunner

import diagnose
from diagnose.cli.app import app
from diagnose.probes.preflight import preflight
from diagnose.readers import load
from diagnose.rules import analyze
from diagnose.rules.base import Severity

C = 10
FEATURES = 20
META = {"task": "classification", "num_classes": C}
# The planted-bug models of the preflight examples: a reshape where transpose was meant, a detached branch.
TimeSteps = scenario_module("preflight_examples").TimeSteps
TwoBranches = scenario_module("preflight_examples").TwoBranches


def clusters(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable data: one Gaussian cluster per class, so that a working model learns it fast."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, FEATURES, generator=torch.Generator().manual_seed(99)) * 1.5
    labels = torch.randint(0, C, (n,), generator=gen)
    return centres[labels] + torch.randn(n, FEATURES, generator=gen), labels


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, C))


def adam(params):
    return torch.optim.Adam(params, lr=1e-3)


def run_preflight(tmp_path, model, batch=None, optimizer=adam, metadata=META, name="pf"):
    return preflight(
        model, nn.CrossEntropyLoss(), batch or clusters(), optimizer, metadata, path=tmp_path / f"{name}.jsonl"
    )


def serious(analysis) -> list[str]:
    return [f.code for f in analysis.findings if f.severity.rank >= Severity.WARNING.rank]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    return run_preflight(tmp_path_factory.mktemp("healthy"), mlp())


def test_a_correct_model_passes_every_check(healthy):
    assert serious(healthy) == []
    assert healthy.errors == []
    evaluated = {code for code, _ in healthy.not_evaluated}
    assert not [code for code in evaluated if code.startswith("PRE")]


def test_the_lr_range_test_is_kept_as_a_loss_against_lr_curve(healthy):
    steps = healthy.run.steps
    assert {"lr", "lr_test_loss", "lr_test_smoothed"} <= set(steps.columns)
    assert steps["lr"].is_monotonic_increasing and steps["lr"].iloc[-1] / steps["lr"].iloc[0] > 1e6
    suggestion = [f for f in healthy.findings if f.name == "learning-rate-suggestion"]
    assert len(suggestion) == 1
    lr = suggestion[0].evidence["suggested"]
    assert steps["lr"].min() < lr < steps["lr"].max()
    assert suggestion[0].evidence["rule"] in ("minimum/10", "steepest descent")


def test_samples_mixed_by_a_view_instead_of_a_transpose(tmp_path):
    x, y = clusters()
    batch = (x.reshape(len(x), 4, FEATURES // 4), y)
    mixed = run_preflight(tmp_path, TimeSteps(mixing=True), batch, name="mixed")
    clean = run_preflight(tmp_path, TimeSteps(mixing=False), batch, name="clean")
    assert "PRE007" in mixed.codes
    assert "PRE007" not in clean.codes


def test_batchnorm_in_training_mode_is_not_taken_for_mixing(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, C))
    assert "PRE007" not in run_preflight(tmp_path, model).codes


def test_a_detached_branch_is_named(tmp_path):
    found = run_preflight(tmp_path, TwoBranches(detached=True), name="detached")
    clean = run_preflight(tmp_path, TwoBranches(detached=False), name="attached")
    finding = next(f for f in found.findings if f.code == "PRE006")
    assert finding.severity is Severity.ERROR
    assert set(finding.evidence["no_grad"]) == {"side.weight", "side.bias"}
    assert "side.weight" in finding.message
    assert "PRE006" not in clean.codes


def test_a_last_layer_initialised_100x_too_large(tmp_path):
    model = mlp()
    with torch.no_grad():
        model[-1].weight.mul_(100)
        model[-1].bias.mul_(100)
    finding = next(f for f in run_preflight(tmp_path, model).findings if f.code == "PRE005")
    assert finding.evidence["loss"] > 5 * finding.evidence["expected"]
    assert "2.3 expected" in finding.message


def test_labels_one_past_the_last_class(tmp_path):
    x, y = clusters()
    y = y.clone()
    y[3] = C
    analysis = run_preflight(tmp_path, mlp(), (x, y))
    finding = next(f for f in analysis.findings if f.code == "PRE002")
    assert finding.evidence["outside"] == 1 and f"0..{C - 1}" in finding.message
    # The checks that would run the loss on the bad label are skipped, not crashed.
    assert "PRE001" not in analysis.codes
    assert any(code == "PRE008" and "skipped" in why for code, why in analysis.not_evaluated)


def test_a_frozen_model_cannot_overfit_one_batch(tmp_path):
    model = mlp()
    model.requires_grad_(False)
    model[-1].bias.requires_grad_(True)
    analysis = run_preflight(tmp_path, model)
    finding = next(f for f in analysis.findings if f.code == "PRE008")
    assert finding.evidence["last"] > finding.evidence["first"] / 10
    assert "PRE006" not in analysis.codes  # frozen on purpose is not a missing gradient


def test_a_model_that_ignores_its_inputs(tmp_path):
    class Blind(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(torch.zeros_like(x))

    assert "PRE009" in run_preflight(tmp_path, Blind()).codes


def test_inputs_that_are_not_normalised_or_not_finite(tmp_path):
    x, y = clusters()
    raw = run_preflight(tmp_path, mlp(), (x * 60 + 120, y), name="raw")
    broken = x.clone()
    broken[0, 0] = float("nan")
    nan = run_preflight(tmp_path, mlp(), (broken, y), name="nan")
    assert [f.severity for f in raw.findings if f.code == "PRE004"] == [Severity.INFO]
    assert "PRE003" in nan.codes
    assert "PRE004" not in nan.codes and "PRE003" not in raw.codes


def test_a_learning_rate_far_past_the_range_test_minimum(tmp_path):
    x, y = clusters(256)
    loader = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    analysis = run_preflight(tmp_path, mlp(), loader, lambda p: torch.optim.SGD(p, lr=8.0))
    finding = next(f for f in analysis.findings if f.code == "PRE010")
    assert finding.evidence["user_lr"] > finding.evidence["lr_at_minimum"]


def test_the_users_model_optimizer_and_rng_are_untouched(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, C))
    optimizer = torch.optim.AdamW(
        [
            {"params": model[0].parameters(), "lr": 1e-3},
            {"params": list(model[1].parameters()) + list(model[3].parameters()), "lr": 3e-3},
        ]
    )
    x, y = clusters()
    nn.CrossEntropyLoss()(model(x), y).backward()
    optimizer.step()  # some optimizer state and gradients, as after a resumed run
    before = copy.deepcopy((model.state_dict(), [p.grad for p in model.parameters()], optimizer.state_dict()))
    rng = torch.get_rng_state()
    mode = model.training

    analysis = diagnose.preflight(model, nn.CrossEntropyLoss(), (x, y), optimizer, META, path=tmp_path / "pf.jsonl")

    after = (model.state_dict(), [p.grad for p in model.parameters()], optimizer.state_dict())
    assert _same(before, after)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training == mode
    assert analysis.errors == [] and not [c for c in analysis.codes if c == "PRE001"]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_preflight_rules_are_not_evaluated_on_an_ordinary_run(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(f'{{"step": {s}, "loss": {2.3 / s}, "lr": 0.1}}\n' for s in range(1, 40)))
    analysis = analyze(load(path))
    skipped = {code for code, _ in analysis.not_evaluated}
    assert {f"PRE{n:03d}" for n in range(1, 12)} <= skipped


def test_the_run_file_reads_back_to_the_same_findings(healthy):
    again = analyze(load(healthy.run.source))
    assert again.codes == healthy.codes


PIECES = """
import torch
from torch import nn

def pieces(scale=1.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[-1].weight.mul_(scale)
        model[-1].bias.mul_(scale)
    centres = torch.randn(10, 20, generator=torch.Generator().manual_seed(99)) * 1.5
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(0))
    x = centres[y] + torch.randn(32, 20, generator=torch.Generator().manual_seed(1))
    return {"model": model, "loss_fn": nn.CrossEntropyLoss(), "batch": (x, y),
            "optimizer": lambda p: torch.optim.Adam(p, lr=1e-3), "metadata": {"num_classes": 10}}

def healthy():
    return pieces()

def broken():
    return pieces(100.0)

def incomplete():
    return {"model": nn.Linear(2, 2)}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "preflight_pieces.py").write_text(textwrap.dedent(PIECES))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(app, ["preflight", *args])


def test_cli_exits_0_on_a_clean_model(project):
    result = invoke("preflight_pieces:healthy", "--path", "pf.jsonl")
    assert result.exit_code == 0, result.output
    assert "PRE011" in result.stdout and result.stdout.splitlines()[-1].startswith("preflight passed")
    assert (project / "pf.jsonl").is_file()


def test_cli_exits_1_on_findings_and_names_them(project):
    result = invoke("preflight_pieces:broken", "--path", "pf.jsonl")
    assert result.exit_code == 1, result.output
    assert "PRE005" in result.stdout
    assert invoke("preflight_pieces:broken", "--path", "pf.jsonl", "--fail-on", "error").exit_code == 0


def test_cli_takes_a_file_path(project):
    assert invoke(f"{project / 'preflight_pieces.py'}:healthy", "--path", "pf.jsonl").exit_code == 0


@pytest.mark.parametrize(
    "target", ["preflight_pieces", "preflight_pieces:nothing", "no_such_module:f", "preflight_pieces:incomplete"]
)
def test_cli_usage_errors_exit_2(project, target):
    result = invoke(target, "--path", "pf.jsonl")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("diagnose: error:")
