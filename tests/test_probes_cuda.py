"""The probes on a CUDA device: the paths that never run on a CPU-only machine.

On a GPU the probes keep every value on the device until a flush (one
transfer for many steps), take the non-finite origin from one multi-tensor
norm per forward instead of a read per module, send the live sentinel's check
through pinned memory without waiting for it, and read the caching allocator
and NVML. CI has no GPU, so these tests skip there; they run wherever CUDA is
available (`python -m pytest tests/test_probes_cuda.py`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from probe_models import Log, VectorNorm, assert_amp_recorded, data, mlp, train, train_amp, train_then_fail
from test_preflight import META, clusters
from test_preflight import mlp as separable_mlp
from torch import nn

import diagnose
from diagnose.levels import Severity

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = "cuda"


def _nonfinite_events(path: Path):
    events = diagnose.load(path).events
    return events[events["event"] == "nonfinite"]


def test_grad_norm_on_the_device_equals_clip_grad_norm(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    reported = train(path, mlp(), steps=10, clip=1e-3, device=CUDA)
    recorded = diagnose.load(path).series("grad_norm")
    assert recorded.to_numpy() == pytest.approx(reported, rel=1e-4)


def test_forward_nan_origin_is_found_from_the_device_norms(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), Log(), nn.Linear(16, 3))

    def starve_relu(step, model, x):  # from step 6 on every ReLU output is 0 and log(0) = -inf
        if step == 6:
            with torch.no_grad():
                model[0].bias.fill_(-100.0)
        return x

    with torch.no_grad():
        model[0].bias.fill_(10.0)
    train(path, model, steps=10, lr=1e-4, perturb=starve_relu, device=CUDA)
    first = _nonfinite_events(path).iloc[0]
    assert (first["step"], first["where"], first["module"], first["type"]) == (6, "forward", "2", "Log")


def test_backward_nan_origin_is_found_on_the_device(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = nn.Sequential(nn.Linear(8, 16), VectorNorm(), nn.Linear(1, 3))

    def zero_rows(step, model, x):  # a zero vector's norm: finite forward, 0/0 in backward
        if step == 4:
            with torch.no_grad():
                model[0].bias.zero_()
            return torch.zeros_like(x)
        return x

    train(path, model, steps=8, lr=1e-3, perturb=zero_rows, device=CUDA)
    first = _nonfinite_events(path).iloc[0]
    assert (first["step"], first["where"], first["module"], first["type"]) == (4, "backward", "1", "VectorNorm")


def test_allocator_and_nvml_readings_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    train(path, mlp(), steps=12, device=CUDA)
    run = diagnose.load(path)
    assert run.events.empty or "probe_error" not in set(run.events["event"])
    total = torch.cuda.get_device_properties(0).total_memory
    allocated = run.series("cuda_allocated")
    assert allocated.index.tolist() == [1, 10]  # the default preset's memory schedule
    assert (allocated > 0).all() and (run.series("cuda_peak") >= allocated).all()
    assert (run.series("cuda_total") == total).all()
    used, nvml_total = run.series("gpu_mem_used"), run.series("gpu_mem_total")
    assert used.index.tolist() == [1]
    assert 0 < used.iloc[0] <= nvml_total.iloc[0]
    assert abs(nvml_total.iloc[0] - total) < 0.05 * total  # NVML and torch name the same GPU
    assert 0 <= run.series("gpu_util").iloc[0] <= 100


def _trained_weights(watched: Path | None, preset: str = "full") -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3)).to(CUDA)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = (tensor.to(CUDA) for tensor in data())
    watch = diagnose.watch(model, optimizer, watched, preset=preset) if watched else None
    for _ in range(15):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)  # dropout draws from the CUDA generator
        loss.backward()
        optimizer.step()
        if watch is not None:
            watch.log(loss=loss)
    if watch is not None:
        watch.close()
    return [p.detach().cpu() for p in model.parameters()]


def test_watching_changes_neither_the_weights_nor_the_random_stream(tmp_path: Path) -> None:
    plain = _trained_weights(None)
    watched = _trained_weights(tmp_path / "run.jsonl")
    assert all(torch.equal(a, b) for a, b in zip(plain, watched, strict=True))


def _synchronisations(path: Path | None, steps: int = 30, *, read_loss: bool = False) -> int:
    """How many synchronising CUDA calls a training loop makes (torch's sync debug mode), close left out;
    ``read_loss``: the loop reads its loss with item() at every step, as a loop printing it would."""
    torch.manual_seed(0)
    model = mlp().to(CUDA)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = (tensor.to(CUDA) for tensor in data())
    # No flush before the end: the time-based one is pushed past the loop, live judgements are off.
    watch = diagnose.watch(model, optimizer, path, live=False, flush_seconds=1e9) if path else None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(steps):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                if watch is not None:
                    watch.log(loss=loss)
                if read_loss:
                    loss.item()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    if watch is not None:
        watch.close()
    return sum("synchroniz" in str(w.message) for w in caught)


def test_the_probes_add_no_synchronisation_between_flushes(tmp_path: Path) -> None:
    # The debug mode is a prototype that does not see every synchronisation: it must see a read at least.
    assert _synchronisations(None, read_loss=True) >= 30 + _synchronisations(None)
    assert _synchronisations(tmp_path / "run.jsonl") == _synchronisations(None)
    assert diagnose.load(tmp_path / "run.jsonl").series("loss").size == 30  # the loop was really watched


def test_the_live_sentinel_stops_on_a_nan_loss_within_two_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mlp(classes=1).to(CUDA)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, _ = (tensor.to(CUDA) for tensor in data())
    nan_step, done = 20, 0
    watched = diagnose.watch(model, optimizer, tmp_path / "run.jsonl", stop_on="error")
    with pytest.raises(diagnose.TrainingStopped) as stopped, watched as w:
        for step in range(1, 61):
            optimizer.zero_grad()
            # log(0) in the user's own loss, outside the model: only the sentinel sees it.
            scale = 0.0 if step == nan_step else 1.0
            loss = -torch.log(torch.sigmoid(model(x)) * scale).mean()
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
            done = step
    assert stopped.value.finding.severity == Severity.ERROR
    # The sentinel's copy is not waited for: it lands one step later at most, then the step boundary stops.
    assert nan_step <= done <= nan_step + 2
    assert not math.isfinite(diagnose.load(tmp_path / "run.jsonl").series("loss", keep_nan=True).loc[nan_step])


def test_amp_on_the_device_records_unscaled_norms_and_the_skipped_step(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    assert_amp_recorded(path, train_amp(path, device=CUDA, steps=8), rel=1e-3)


def test_an_out_of_memory_error_is_recorded_with_the_allocator_state_and_raised(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with pytest.raises(torch.cuda.OutOfMemoryError):
        train_then_fail(path, lambda: torch.empty(1 << 50, dtype=torch.uint8, device=CUDA), device=CUDA)  # 1 PB
    events = diagnose.load(path).events
    assert events["event"].tolist() == ["out_of_memory"]
    assert events["cuda_allocated"].iloc[0] > 0


def test_preflight_of_a_model_on_the_device_passes_and_leaves_it_alone(tmp_path: Path) -> None:
    model = separable_mlp().to(CUDA)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = (tensor.to(CUDA) for tensor in clusters())
    analysis = diagnose.preflight(
        model, nn.CrossEntropyLoss(), (x, y), lambda p: torch.optim.Adam(p, lr=1e-3), META, tmp_path / "pf.jsonl"
    )
    assert [f.code for f in analysis.findings if f.severity.rank >= Severity.WARNING.rank] == []
    assert all(p.device.type == CUDA for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
