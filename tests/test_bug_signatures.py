"""Bug signatures on real (tiny) training loops: what the probes record for each mistake, what
the rule that names it says, and that the same loop with the mistake fixed records nothing."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import diagnose
from diagnose.runfile import schema

CLASSES = 3


def _data(n: int = 256, seed: int = 0, scale: float = 1.0, sort: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    if sort:
        order = torch.argsort(y, stable=True)
        x, y = x[order], y[order]
    return x * scale, y


def _mlp(hidden: int = 16) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))


def _train(
    path: Path,
    model: nn.Module,
    *,
    steps: int = 30,
    lr: float = 0.05,
    zero_grad: str = "before",
    optimizer: torch.optim.Optimizer | None = None,
    criterion: Callable | None = None,
    output: Callable = lambda out: out,
    target: Callable = lambda y: y,
    data=None,
    before: Callable = lambda model: None,
    after_backward: Callable = lambda model: None,
    **options,
) -> diagnose.Run:
    """A plain loop over 32-sample batches; ``zero_grad`` is ``before`` (forward), ``between``
    (forward and backward) or ``never``; ``after_backward`` runs between backward and step."""
    x, y = data if data is not None else _data()
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    criterion = criterion or nn.CrossEntropyLoss()
    with diagnose.watch(
        model, optimizer, path, metadata={"task": "multiclass", "num_classes": CLASSES}, **options
    ) as w:
        before(model)
        for step in range(steps):
            xb, yb = x[(step * 32) % len(x) :][:32], y[(step * 32) % len(x) :][:32]
            if zero_grad == "before":
                optimizer.zero_grad()
            out = output(model(xb))
            if zero_grad == "between":
                optimizer.zero_grad()
            loss = criterion(out, target(yb))
            loss.backward()
            after_backward(model)
            optimizer.step()
            w.log(loss=loss)
    return diagnose.load(path)


def _codes(run: diagnose.Run) -> list[str]:
    return diagnose.analyze(run).codes


def _events(run: diagnose.Run, name: str) -> list[dict]:
    from diagnose.rules.helpers import event_records

    return event_records(run, name)


def _bugs(run: diagnose.Run) -> list[str]:
    return [code for code in _codes(run) if code.startswith("BUG")]


def test_gradients_never_reset_are_carried_into_the_next_backward(tmp_path: Path) -> None:
    run = _train(tmp_path / "bad.jsonl", _mlp(), zero_grad="never")
    carried = run.series("grad_carried")
    assert carried.loc[1] == 0 and (carried.loc[2:] > 0).all()
    analysis = diagnose.analyze(run)
    assert analysis.worst.code == "BUG001" and "zero_grad" in analysis.worst.title


@pytest.mark.parametrize("where", ["before", "between"])
def test_gradients_reset_before_or_after_the_forward_are_not_carried(tmp_path: Path, where: str) -> None:
    run = _train(tmp_path / "good.jsonl", _mlp(), zero_grad=where)
    assert (run.series("grad_carried") == 0).all()
    assert _bugs(run) == []


def test_zero_grad_with_set_to_none_false_is_a_reset(tmp_path: Path) -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    optimizer.zero_grad = lambda set_to_none=False, _z=optimizer.zero_grad: _z(set_to_none=False)
    run = _train(tmp_path / "zeros.jsonl", model, optimizer=optimizer)
    assert (run.series("grad_carried") == 0).all()


def test_parameters_outside_the_optimizer_are_named(tmp_path: Path) -> None:
    model = _mlp()
    run = _train(tmp_path / "bad.jsonl", model, optimizer=torch.optim.SGD(model[2].parameters(), lr=0.05))
    [event] = _events(run, schema.EV_UNOPTIMIZED)
    assert event["modules"] == ["0"] and event["count"] == 2
    assert "BUG002" in _bugs(run) and "BUG001" not in _bugs(run)  # zero_grad resets what the optimizer holds


def test_training_in_eval_mode_is_seen_and_a_frozen_batchnorm_is_not(tmp_path: Path) -> None:
    def model() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))

    run = _train(tmp_path / "eval.jsonl", model(), before=lambda m: m.eval())
    [event] = _events(run, schema.EV_EVAL_MODE)
    assert event["model_training"] == 0 and event["count"] == 2
    assert _bugs(run) == ["BUG005"]

    def freeze_bn(m: nn.Module) -> None:
        m[1].eval()
        m[1].requires_grad_(False)

    frozen = _train(tmp_path / "frozen.jsonl", model(), before=freeze_bn)
    assert _events(frozen, schema.EV_EVAL_MODE) == [] and _bugs(frozen) == []


def test_softmax_fed_into_cross_entropy_is_named_with_its_floor(tmp_path: Path) -> None:
    run = _train(tmp_path / "bad.jsonl", _mlp(), output=lambda out: out.softmax(-1))
    [event] = _events(run, schema.EV_LOSS_FUNCTION)
    assert event["loss_fn"] == "CrossEntropyLoss" and event["broadcast"] == 0
    assert run.series("pred_rowsum_dev").max() < 1e-5
    finding = diagnose.analyze(run).worst
    assert finding.code == "BUG006" and "softmax" in finding.message and "0.5514" in finding.message
    assert _bugs(_train(tmp_path / "good.jsonl", _mlp())) == []


def test_nll_loss_on_raw_scores_and_its_log_softmax_twin(tmp_path: Path) -> None:
    bad = _train(tmp_path / "bad.jsonl", _mlp(), criterion=nn.NLLLoss())
    assert diagnose.analyze(bad).worst.code == "BUG006"
    good = _train(tmp_path / "good.jsonl", _mlp(), criterion=nn.NLLLoss(), output=lambda out: out.log_softmax(-1))
    assert _bugs(good) == []


def test_sigmoid_into_bce_with_logits(tmp_path: Path) -> None:
    def model() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    as_float = lambda y: (y > 0).float().unsqueeze(-1)  # noqa: E731
    bad = _train(
        tmp_path / "bad.jsonl", model(), criterion=nn.BCEWithLogitsLoss(), output=torch.sigmoid, target=as_float
    )
    assert "BUG006" in _bugs(bad) and "sigmoid" in diagnose.analyze(bad).worst.message
    assert _bugs(_train(tmp_path / "good.jsonl", model(), criterion=nn.BCEWithLogitsLoss(), target=as_float)) == []


def test_mse_broadcast_warning_is_recorded_and_still_shown(tmp_path: Path) -> None:
    def model() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    shown = []
    previous = warnings.showwarning
    warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
            bad = _train(tmp_path / "bad.jsonl", model(), criterion=nn.MSELoss(), target=lambda y: y.float())
    finally:
        warnings.showwarning = previous
    event, *recounts = [e for e in _events(bad, schema.EV_WARNING) if "target size" in e["message"]]
    assert all(later["count"] > event["count"] for later in recounts)
    assert event["category"] == "UserWarning"
    assert any("target size" in text for text in shown)  # the user's display still ran
    assert _events(bad, schema.EV_LOSS_FUNCTION)[0]["broadcast"] == 1
    assert diagnose.analyze(bad).worst.code == "BUG008"
    good = _train(tmp_path / "good.jsonl", model(), criterion=nn.MSELoss(), target=lambda y: y.float().unsqueeze(-1))
    assert not [e for e in _events(good, schema.EV_WARNING) if "target size" in e["message"]]
    assert _bugs(good) == ["BUG021"]  # shapes fixed; still MSE on the class indices of a 3-class task


def test_constant_initialisation_leaves_identical_units(tmp_path: Path) -> None:
    model = _mlp()
    for layer in (model[0], model[2]):
        nn.init.constant_(layer.weight, 0.1)
        nn.init.zeros_(layer.bias)
    run = _train(tmp_path / "bad.jsonl", model, steps=12)
    phases = {(e["module"], e["phase"]) for e in _events(run, schema.EV_DUPLICATE_ROWS)}
    assert {("0", "start"), ("0", "training"), ("2", "start")} <= phases
    assert ("2", "training") not in phases  # the output layer's rows separate on their own
    assert "BUG010" in _bugs(run)
    assert _events(_train(tmp_path / "good.jsonl", _mlp(), steps=12), schema.EV_DUPLICATE_ROWS) == []


def test_labels_sorted_by_class_give_one_class_batches(tmp_path: Path) -> None:
    bad = _train(tmp_path / "bad.jsonl", _mlp(), data=_data(sort=True))
    assert bad.series("label_classes").median() == 1
    assert "BUG013" in _bugs(bad)
    good = _train(tmp_path / "good.jsonl", _mlp())
    assert good.series("label_classes").min() == CLASSES and _bugs(good) == []


def test_raw_feature_scale_is_read_at_the_first_layer(tmp_path: Path) -> None:
    bad = _train(tmp_path / "bad.jsonl", _mlp(), data=_data(scale=300.0), lr=1e-5, preset="full")
    assert bad.layer_series("in_std")["0"].median() > 200
    assert "BUG009" in _bugs(bad)
    assert "BUG009" not in _bugs(_train(tmp_path / "good.jsonl", _mlp(), preset="full"))


class _FunctionalTanh(nn.Module):
    def __init__(self, gain: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Linear(8, 32), nn.Linear(32, CLASSES)
        with torch.no_grad():
            self.first.weight.mul_(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def test_a_functional_tanh_that_saturates_shows_at_the_next_layer(tmp_path: Path) -> None:
    bad = _train(tmp_path / "bad.jsonl", _FunctionalTanh(gain=40.0), preset="full")
    assert bad.layer_series("in_sat_frac")["second"].median() > 0.8
    analysis = diagnose.analyze(bad)
    assert analysis.worst.code == "BUG011"
    [saturated] = [f for f in analysis if f.code == "ACT002"]  # the saturation is seen as such, a symptom
    assert saturated.explained_by == "BUG011" and saturated.module == "second"
    good = _train(tmp_path / "good.jsonl", _FunctionalTanh(gain=1.0), preset="full")
    assert not {"BUG011", "ACT002"} & set(_codes(good))


def test_a_layer_after_a_sigmoid_module_is_no_functional_tanh(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Sigmoid(), nn.Linear(32, CLASSES))
    with torch.no_grad():
        model[0].weight.mul_(40.0)
    codes = _codes(_train(tmp_path / "run.jsonl", model, preset="full"))
    assert "ACT002" in codes and "BUG011" not in codes


def test_a_nan_made_by_the_loss_is_blamed_on_the_loss(tmp_path: Path) -> None:
    def with_a_distance_term(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # A hand-written term with sqrt(0): finite forward, 0 * inf = NaN in its backward.
        return nn.functional.cross_entropy(out, y) + torch.sqrt((out[:, :1] - out[:, :1].detach()) ** 2).mean()

    run = _train(tmp_path / "bad.jsonl", _mlp(), criterion=with_a_distance_term, steps=10)
    assert run.series("loss_grad_nonfinite").index.min() == 1
    assert _events(run, schema.EV_NONFINITE)[0]["where"] == schema.WHERE_BACKWARD  # the last layer got the blame
    analysis = diagnose.analyze(run)
    assert analysis.worst.code == "BUG014" and "NF001" in analysis.worst.symptoms


def test_scheduler_stepped_per_batch_collapses_the_learning_rate(tmp_path: Path) -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
    x, y = _data()
    with diagnose.watch(model, optimizer, tmp_path / "bad.jsonl") as w:
        for step in range(100):
            xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            w.log(loss=loss)
    assert "BUG012" in _bugs(diagnose.load(tmp_path / "bad.jsonl"))


def test_the_gradient_at_the_step_shows_a_step_taken_before_backward(tmp_path: Path) -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    with diagnose.watch(model, optimizer, tmp_path / "bad.jsonl") as w:
        for step in range(30):
            xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.step()
            loss.backward()
            w.log(loss=loss)
    bad = diagnose.load(tmp_path / "bad.jsonl")
    assert (bad.series("grad_at_step") == 0).all() and (bad.series("grad_norm") > 0).all()
    assert diagnose.analyze(bad).worst.code == "BUG016"
    good = _train(tmp_path / "good.jsonl", _mlp())
    at_step = good.series("grad_at_step")
    assert (at_step - good.series("grad_norm").reindex(at_step.index)).abs().max() < 1e-5 and _bugs(good) == []


def test_a_clip_far_below_the_gradient_norm_is_seen_and_a_spike_guard_is_not(tmp_path: Path) -> None:
    def clip(max_norm: float) -> Callable:
        return lambda model: nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    bad = _train(tmp_path / "bad.jsonl", _mlp(), after_backward=clip(1e-4))
    assert (bad.series("grad_at_step") < 1.01e-4).all()
    assert "BUG017" in _bugs(bad)
    assert _bugs(_train(tmp_path / "good.jsonl", _mlp(), after_backward=clip(1.0))) == []


@pytest.mark.parametrize("divide", [False, True])
def test_accumulation_counts_backward_passes_and_the_weight_of_the_loss(tmp_path: Path, divide: bool) -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    criterion = nn.CrossEntropyLoss()
    x, y = _data()
    with diagnose.watch(model, optimizer, tmp_path / "run.jsonl") as w:
        for step in range(60):
            xb, yb = x[(step * 16) % 256 :][:16], y[(step * 16) % 256 :][:16]
            loss = criterion(model(xb), yb)
            (loss / 4 if divide else loss).backward()
            if step % 4 == 3:
                optimizer.step()
                optimizer.zero_grad()
            w.log(loss=loss)
    run = diagnose.load(tmp_path / "run.jsonl")
    assert (run.series("backward_passes") == 4).all()
    assert (run.series("loss_backward_scale") == (0.25 if divide else 1.0)).all()
    assert ("BUG018" in _bugs(run)) is not divide


def test_a_loop_without_accumulation_is_judged_by_the_accumulation_rules(tmp_path: Path) -> None:
    """One backward per step writes no backward_passes: BUG018 and BUG023 still judge the run (silently)."""
    run = _train(tmp_path / "run.jsonl", _mlp())
    assert not run.has("backward_passes") and not run.has("backward_missed_model")
    analysis = diagnose.analyze(run)
    skipped = {code for code, _ in analysis.not_evaluated}
    assert {"BUG018", "BUG023"}.isdisjoint(skipped)
    assert {"BUG018", "BUG023"}.isdisjoint(analysis.codes)


def test_a_regression_loss_on_class_indices_and_a_linear_stack_are_named(tmp_path: Path) -> None:
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.0), nn.Linear(16, 1))
    run = _train(
        tmp_path / "bad.jsonl",
        linear,
        criterion=nn.MSELoss(),
        output=lambda out: out.squeeze(-1),
        target=torch.Tensor.float,
    )
    assert {"BUG021", "BUG022"} <= set(_bugs(run))
    assert not {"BUG021", "BUG022"} & set(_bugs(_train(tmp_path / "good.jsonl", _mlp())))


def test_a_weight_decay_that_halves_the_weights_in_a_few_steps(tmp_path: Path) -> None:
    model = _mlp()
    bad = _train(
        tmp_path / "bad.jsonl", model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=1.0)
    )
    assert "BUG020" in _bugs(bad)
    model = _mlp()
    usual = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    assert "BUG020" not in _bugs(_train(tmp_path / "good.jsonl", model, optimizer=usual))


def test_nll_loss_as_a_function_on_raw_scores_goes_below_any_label_likelihood(tmp_path: Path) -> None:
    bad = _train(tmp_path / "bad.jsonl", _mlp(), criterion=nn.functional.nll_loss, steps=60, lr=0.5)
    finding = diagnose.analyze(bad).worst
    assert finding.code == "BUG015" and "not log-probabilities" in finding.message
    good = _train(
        tmp_path / "good.jsonl", _mlp(), criterion=nn.functional.nll_loss, output=lambda out: out.log_softmax(-1)
    )
    assert _bugs(good) == []


def test_a_loss_rebuilt_from_its_value_never_reaches_the_model(tmp_path: Path) -> None:
    def rebuilt(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tensor(nn.functional.cross_entropy(out, y).item(), requires_grad=True)

    bad = _train(tmp_path / "bad.jsonl", _mlp(), criterion=rebuilt)
    assert (bad.series("backward_missed_model") == 1).all() and not bad.has("grad_norm")
    assert diagnose.analyze(bad).worst.code == "BUG023"
    assert not _train(tmp_path / "good.jsonl", _mlp()).has("backward_missed_model")


def test_a_relu_after_the_output_of_a_regression_clamps_targets_of_both_signs(tmp_path: Path) -> None:
    x, _ = _data()
    data = (x, x[:, :1] - x[:, 1:2])  # a target of both signs
    clamped = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.ReLU())
    bad = _train(tmp_path / "bad.jsonl", clamped, criterion=nn.MSELoss(), data=data, steps=40)
    assert bad.series("target_neg_frac").between(0.3, 0.7).all()
    finding = next(f for f in diagnose.analyze(bad) if f.code == "BUG006")
    assert "clamped at 0" in finding.message and "targets are negative" in finding.message
    good = _train(tmp_path / "good.jsonl", _mlp()[:2].append(nn.Linear(16, 1)), criterion=nn.MSELoss(), data=data)
    assert "BUG006" not in _bugs(good)
    # A target that is never negative may be meant to be predicted through a ReLU.
    positive = (x, (x[:, :1] - x[:, 1:2]).abs())
    kept = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.ReLU())
    run = _train(tmp_path / "positive.jsonl", kept, criterion=nn.MSELoss(), data=positive, steps=40)
    assert (run.series("target_neg_frac") == 0).all() and "BUG006" not in _bugs(run)


class _LastStep(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.GRU(8, 16, batch_first=batch_first)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("batch_first", [False, True])
def test_a_recurrent_layer_reading_the_batch_as_time_is_named(tmp_path: Path, batch_first: bool) -> None:
    x, y = _data()
    sequences = (x.reshape(-1, 1, 8).expand(-1, 5, 8).contiguous(), y)  # (batch 32, time 5, features 8) per step
    run = _train(tmp_path / "run.jsonl", _LastStep(batch_first), data=sequences, steps=6)
    [layer] = _events(run, schema.EV_RECURRENT_INPUT)
    assert layer["module"] == "rnn" and layer["batch_first"] == int(batch_first) and layer["input_shape"] == [32, 5, 8]
    assert ("BUG027" in _bugs(run)) is not batch_first


@pytest.mark.parametrize("keep", [False, True])
def test_loss_tensors_kept_in_a_list_are_counted_alive(tmp_path: Path, keep: bool) -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    criterion = nn.CrossEntropyLoss()
    x, y = _data()
    history: list = []
    with diagnose.watch(model, optimizer, tmp_path / "run.jsonl") as w:
        for step in range(30):
            xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            history.append(loss if keep else loss.item())
            w.log(loss=loss)
    run = diagnose.load(tmp_path / "run.jsonl")
    kept = run.series("graphs_kept")
    assert len(kept) >= 3 and ((kept >= 1).all() if keep else (kept == 0).all())
    assert ("BUG028" in _bugs(run)) is keep
