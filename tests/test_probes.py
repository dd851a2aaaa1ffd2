"""The probes on real (tiny) training runs: what they record and that they never break training."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from probe_models import Log, VectorNorm, assert_amp_recorded, data, mlp, train, train_amp, train_then_fail
from torch import nn

import diagnose
from diagnose.probes.gradients import GradientProbe


def test_global_grad_norm_equals_clip_grad_norm_before_clipping(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    # max_norm far below the real norm: clipping happens on every step, and the
    # probe must still record the unclipped norm that clip_grad_norm_ reports.
    reported = train(path, mlp(), steps=10, clip=1e-3)
    recorded = diagnose.load(path).series("grad_norm")
    assert len(recorded) == 10
    assert recorded.to_numpy() == pytest.approx(reported, rel=1e-5)
    assert min(reported) > 1e-3  # clipping really changed the gradients


def test_per_layer_grad_norms_combine_to_the_global_norm(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    train(path, mlp(), steps=10, preset="full")
    run = diagnose.load(path)
    per_layer = run.layer_series("grad_norm")
    assert list(per_layer.columns) == ["0", "2", "4"]  # the three Linear layers, input side first
    combined = (per_layer**2).sum(axis=1) ** 0.5
    assert combined.to_numpy() == pytest.approx(run.series("grad_norm").to_numpy(), rel=1e-5)


def test_nan_in_forward_is_attributed_to_the_module_that_made_it(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), Log(), nn.Linear(16, 3))

    def starve_relu(step, model, x):  # from step 6 on, every ReLU output is exactly 0 -> log(0) = -inf
        if step == 6:
            with torch.no_grad():
                model[0].bias.fill_(-100.0)
        return x

    with torch.no_grad():
        model[0].bias.fill_(10.0)  # all positive at first: a finite log
    train(path, model, steps=10, lr=1e-4, perturb=starve_relu)
    events = diagnose.load(path).events
    nonfinite = events[events["event"] == "nonfinite"]
    assert len(nonfinite) == 1
    first = nonfinite.iloc[0]
    assert (first["step"], first["where"], first["module"], first["type"]) == (6, "forward", "2", "Log")


def test_nan_made_in_backward_is_attributed_to_the_module_whose_backward_made_it(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = nn.Sequential(nn.Linear(8, 16), VectorNorm(), nn.Linear(1, 3))

    def zero_rows(step, model, x):  # the norm of a zero vector: finite forward, 0/0 in backward
        if step == 4:
            with torch.no_grad():
                model[0].bias.zero_()
            return torch.zeros_like(x)
        return x

    train(path, model, steps=8, lr=1e-3, perturb=zero_rows)
    run = diagnose.load(path)
    nonfinite = run.events[run.events["event"] == "nonfinite"]
    assert len(nonfinite) == 1
    first = nonfinite.iloc[0]
    assert (first["step"], first["where"], first["module"], first["type"]) == (4, "backward", "1", "VectorNorm")
    assert math.isfinite(run.series("loss").loc[4])  # the forward pass was fine at that step
    assert 4 in run.nan_steps["grad_norm"]


def test_a_failing_probe_is_recorded_switched_off_and_training_goes_on(tmp_path: Path, monkeypatch) -> None:
    def broken(self, record):
        raise RuntimeError("probe bug")

    monkeypatch.setattr(GradientProbe, "before_step", broken)
    path = tmp_path / "run.jsonl"
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.warns(RuntimeWarning, match="gradients"):
        train(path, model, steps=6)
    run = diagnose.load(path)
    errors = run.events[run.events["event"] == "probe_error"]
    assert errors["probe"].tolist() == ["gradients"]  # reported once, then off
    assert run.series("loss").size == 6  # training and the other probes carried on
    assert "grad_norm" not in run.steps.columns
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_hooks_are_gone_after_close_and_close_twice_is_safe(tmp_path: Path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    w = diagnose.watch(model, optimizer, tmp_path / "run.jsonl", preset="full")
    x, y = data()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    w.close()
    w.close()
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks
        assert "forward" not in vars(module)  # the non-finite probe's wrapped forwards are put back
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


def test_the_probes_reading_the_output_gradient_share_one_hook_on_the_output(tmp_path: Path) -> None:
    # The gradient norms and the loss-gradient signal both start from the model output's gradient; a
    # tensor hook costs a registration and a call from the autograd engine at every step, so the watch
    # puts one on the output for both.
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    outputs = []
    x, y = data()

    def loss_fn(out: torch.Tensor) -> torch.Tensor:  # sqrt(0) of a term: 0 * inf = NaN in its backward only
        return nn.functional.cross_entropy(out, y) + torch.sqrt((out[:, :1] - out[:, :1].detach()) ** 2).mean()

    with diagnose.watch(model, optimizer, tmp_path / "run.jsonl", live=False) as w:
        model.register_forward_hook(lambda module, args, output: outputs.append(output))  # after the watch's
        for _ in range(6):
            optimizer.zero_grad()
            loss = loss_fn(model(x))
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
    # Steps 5 and 6 sample nothing: the early steps' signatures hook the output of their own.
    assert [len(output._backward_hooks) for output in outputs[4:]] == [1, 1]
    steps = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    steps = [line for line in steps if line["kind"] == "step"]
    assert all("grad_norm" in line for line in steps) and len(steps) == 6  # NaN from step 1 on, but read
    assert diagnose.load(tmp_path / "run.jsonl").series("loss_grad_nonfinite").index.min() == 1


def test_killed_writer_leaves_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import diagnose
        from probe_models import data, mlp
        model = mlp(); opt = torch.optim.SGD(model.parameters(), lr=0.05); x, y = data()
        w = diagnose.watch(model, opt, {str(path)!r}, flush_seconds=0.0)
        for step in range(1, 1000000):
            opt.zero_grad(); loss = torch.nn.functional.cross_entropy(model(x), y); loss.backward(); opt.step()
            w.log(loss=loss)
            if step == 40:
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL
    with open(path, "ab") as fh:  # and a line cut in the middle, as a kill during a write leaves it
        fh.write(b'{"kind":"step","step":41,"lo')
    run = diagnose.load(path)
    assert 30 <= run.n_steps <= 40
    assert any("cut off" in w for w in run.warnings)


def test_grad_scaler_skipped_step_is_recorded_with_its_scale(tmp_path: Path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    path = tmp_path / "run.jsonl"
    x, y = data()
    with diagnose.watch(model, optimizer, path, scaler=scaler) as w:
        for step in range(1, 9):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            # Step 5 overflows the way fp16 would: the scaled loss is infinite.
            scaler.scale(loss * (math.inf if step == 5 else 1.0)).backward()
            scaler.step(optimizer)
            scaler.update()
            w.log(loss=loss)
    run = diagnose.load(path)
    skipped = run.events[run.events["event"] == "skipped_step"]
    assert skipped["step"].tolist() == [5]
    assert skipped["loss_scale"].tolist() == [1024.0]  # the scale in force when the step was skipped
    assert run.n_steps == 8  # a skipped step still counts as a step
    assert "step" not in scaler.__dict__  # the wrapper is gone after close


def test_gradient_accumulation_counts_optimizer_steps_and_averages_the_loss(tmp_path: Path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    path = tmp_path / "run.jsonl"
    x, y = data(n=64)
    losses = []
    with diagnose.watch(model, optimizer, path) as w:
        for _ in range(5):
            optimizer.zero_grad()
            step_losses = []
            for chunk in range(4):
                part = slice(chunk * 16, (chunk + 1) * 16)
                loss = nn.functional.cross_entropy(model(x[part]), y[part]) / 4
                loss.backward()
                w.log(loss=loss * 4)
                step_losses.append(loss.item() * 4)
            optimizer.step()
            losses.append(sum(step_losses) / 4)
    run = diagnose.load(path)
    assert run.series("loss").index.tolist() == [1, 2, 3, 4, 5]
    assert run.series("loss").to_numpy() == pytest.approx(losses, rel=1e-6)


def test_presets_differ_in_what_they_sample(tmp_path: Path) -> None:
    counts = {}
    for preset in ("minimal", "default", "full"):
        path = tmp_path / f"{preset}.jsonl"
        train(path, mlp(), steps=20, preset=preset)
        run = diagnose.load(path)
        counts[preset] = len(run.layers)
        assert run.series("loss").size == 20 and run.series("grad_norm").size == 20
    assert counts["minimal"] == 0 < counts["default"] < counts["full"]


def test_eval_metrics_and_explicit_steps(tmp_path: Path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    path = tmp_path / "run.jsonl"
    x, y = data()
    with diagnose.watch(model, optimizer, path) as w:
        for step in range(100, 110):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            w.log(step=step, loss=loss, accuracy=0.5)
            if step % 5 == 0:
                model.eval()
                with torch.no_grad():
                    w.log(step=step, val_loss=nn.functional.cross_entropy(model(x), y), eval_accuracy=0.4)
                model.train()
    run = diagnose.load(path)
    assert run.series("loss").index.tolist() == list(range(100, 110))
    assert run.series("accuracy").tolist() == [0.5] * 10
    assert run.series("val_loss").index.tolist() == [100, 105]
    assert run.series("val_accuracy").tolist() == [0.4, 0.4]


@pytest.mark.parametrize("careful", [True, False], ids=["eval-no-grad", "train-mode-with-grad"])
def test_an_evaluation_after_an_epoch_is_recorded_at_its_last_step(tmp_path: Path, careful: bool) -> None:
    """The README's loop; an evaluation that forgets eval() and no_grad() runs a forward the watch takes
    for the next step's, and must still land on the step whose weights it measured."""
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    path = tmp_path / "run.jsonl"
    x, y = data()
    with diagnose.watch(model, optimizer, path) as w:
        for _ in range(4):
            for batch in (slice(0, 16), slice(16, 32)):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
                w.log(loss=loss)
            model.train(not careful)
            with torch.set_grad_enabled(not careful):
                w.log(val_loss=nn.functional.cross_entropy(model(x), y))
            model.train()
    run = diagnose.load(path)
    assert run.series("val_loss").index.tolist() == [2, 4, 6, 8]
    assert run.n_steps == 8 and run.series("loss").index.tolist() == list(range(1, 9))


def test_reopening_a_run_file_appends(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    train(path, mlp(), steps=5)
    train(path, mlp(), steps=7)
    runs = diagnose.load_all(path)
    assert [r.n_steps for r in runs] == [5, 7]


def test_meta_record_describes_model_optimizer_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    train(path, mlp(), steps=2, metadata={"task": "multiclass", "num_classes": 3}, name="exp-1")
    run = diagnose.load(path)
    assert run.name == "exp-1" and run.num_classes == 3 and run.task == "multiclass"
    model = run.meta["model"]
    assert model["parameters"] == sum(p.numel() for p in mlp().parameters())
    assert ["0", "Linear"] in model["modules"] and ["1", "ReLU"] in model["modules"]
    assert run.meta["optimizer"]["type"] == "SGD" and run.meta["optimizer"]["groups"][0]["lr"] == 0.05
    assert run.meta["torch"] == torch.__version__ and run.meta["schema"] == "diagnose.run/1"


def test_activation_statistics_see_dead_relu_units(tmp_path: Path) -> None:
    model = mlp(width=16)
    with torch.no_grad():
        model[0].bias[:8] = -100.0  # half of the first ReLU's units can never fire
    path = tmp_path / "run.jsonl"
    train(path, model, steps=3, lr=1e-4, every={"activations": 1})
    layers = diagnose.load(path).layers
    relu = layers[(layers["module"] == "1") & (layers["step"] == 1)].iloc[0]
    assert relu["act_dead_frac"] == pytest.approx(0.5)
    assert relu["act_zero_frac"] >= 0.5
    assert relu["act_unit_samples"] == 32  # the batch: each unit seen once per example
    output = layers[layers["module"] == "(output)"]
    assert len(output) == 3 and (output["act_std"] > 0).all()


def test_ddp_wrapped_model_records_without_breaking(tmp_path: Path) -> None:
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(mlp())
        path = tmp_path / "run.jsonl"
        train(path, model, steps=4)
        run = diagnose.load(path)
        assert run.series("loss").size == 4 and run.series("grad_norm").notna().all()
    finally:
        dist.destroy_process_group()


def test_closure_steps_record_the_gradients_of_their_own_step(tmp_path: Path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    path = tmp_path / "run.jsonl"
    reported = []

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        reported.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)))
        return loss

    with diagnose.watch(model, optimizer, path) as w:
        for _ in range(6):
            w.log(loss=optimizer.step(closure))
    recorded = diagnose.load(path).series("grad_norm")
    assert recorded.to_numpy() == pytest.approx(reported, rel=1e-5)


def test_amp_gradient_norm_is_unscaled_and_an_overflow_skip_is_not_a_nan(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    assert_amp_recorded(path, train_amp(path), rel=1e-5)


def test_a_loop_that_bypasses_the_watched_module_still_splits_steps(tmp_path: Path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    path = tmp_path / "run.jsonl"
    losses = []
    with diagnose.watch(model, optimizer, path) as w:
        for _ in range(5):
            optimizer.zero_grad()
            hidden = x
            for layer in model:  # the Sequential's own forward (and its hooks) never runs
                hidden = layer(hidden)
            loss = nn.functional.cross_entropy(hidden, y)
            loss.backward()
            w.log(loss=loss)  # logged before the step, as many loops do
            optimizer.step()
            losses.append(loss.item())
    run = diagnose.load(path)
    assert run.series("loss").to_numpy() == pytest.approx(losses)
    assert run.series("grad_norm").size == 5


@pytest.mark.parametrize(
    ("error", "event"),
    [
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"),
            "out_of_memory",
        ),
        (ValueError("shapes do not match"), "exception"),
    ],
)
def test_an_exception_in_the_loop_is_recorded_and_still_raised(tmp_path: Path, error, event) -> None:
    path = tmp_path / "run.jsonl"

    def fail() -> None:
        raise error

    with pytest.raises(type(error)):
        train_then_fail(path, fail)
    run = diagnose.load(path)
    assert run.events["event"].tolist() == [event]
    assert run.series("loss").size == 3


def test_a_file_that_cannot_be_written_never_reaches_the_training_loop(tmp_path: Path, monkeypatch) -> None:
    from diagnose.runfile.writer import RunWriter

    def disk_full(self):
        raise OSError(28, "No space left on device")

    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    w = diagnose.watch(model, optimizer, tmp_path / "run.jsonl", flush_seconds=0.0)
    monkeypatch.setattr(RunWriter, "flush", disk_full)
    with pytest.warns(RuntimeWarning, match="recording stopped"):
        for _ in range(5):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
    w.close()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_direction_spread_sees_a_collapse_that_a_growing_norm_hides():
    from diagnose.probes.activations import STATS, activation_stats

    generator = torch.Generator().manual_seed(0)
    spread_out = torch.randn(256, 32, generator=generator)
    one_way = torch.rand(256, 1, generator=generator) * 10 * torch.randn(1, 32, generator=generator).abs()
    stat = STATS.index("act_dir_spread")
    assert activation_stats(spread_out, "other")[stat] == pytest.approx(1.0, abs=0.1)
    assert activation_stats(one_way, "other")[stat] < 1e-3
    # The spread relative to the signal does not see it: the norms differ from sample to sample.
    values = activation_stats(one_way, "other")
    assert values[STATS.index("act_batch_std")] / values[STATS.index("act_rms")] > 0.1


def test_the_bug_signatures_can_be_left_out_to_measure_their_cost(tmp_path: Path) -> None:
    import dataclasses

    from diagnose.probes.presets import get_preset

    without = dataclasses.replace(get_preset("default"), signatures=False)
    runs = {}
    for name, preset in (("with", "default"), ("without", without)):
        train(tmp_path / f"{name}.jsonl", mlp(), steps=12, preset=preset, loss_fn=nn.CrossEntropyLoss())
        runs[name] = diagnose.load(tmp_path / f"{name}.jsonl")
    signals = {"grad_carried", "grad_at_step"}
    assert signals <= set(runs["with"].steps.columns)
    assert not signals & set(runs["without"].steps.columns)
    assert "label_entropy" in runs["without"].steps.columns  # what the loss is given is no bug signature
    assert runs["without"].series("grad_norm").size == 12
