"""The watch on training loops that used to break it or lose data (issue 12): pickling, unwritable
paths, text in `log`, outputs without a tensor, float64, sparse gradients, frozen layers, no optimizer."""

from __future__ import annotations

import copy
import dataclasses
import io
import warnings
from pathlib import Path

import pytest
import torch
from probe_models import data, mlp
from torch import nn

import diagnose


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, w, x, y, clip: float | None = None) -> float:
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    norm = float(nn.utils.clip_grad_norm_(model.parameters(), clip if clip is not None else 1e12))
    optimizer.step()
    w.log(loss=loss)
    return norm


def test_a_watched_model_can_be_saved_and_deep_copied(tmp_path: Path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    with diagnose.watch(model, optimizer, tmp_path / "run.jsonl", preset="full") as w:
        for _ in range(3):
            _step(model, optimizer, w, x, y)
            buffer = io.BytesIO()
            torch.save(model, buffer)  # what pytorch/examples word_language_model does every epoch
            twin = copy.deepcopy(model)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        assert torch.equal(loaded(x), model(x)) and torch.equal(twin(x), model(x))
        copied_forwards = [vars(m).get("forward") for copy_ in (loaded, twin) for m in copy_.modules()]
        assert not any(type(f).__module__.startswith("diagnose") for f in copied_forwards)  # the copies are not watched
    assert diagnose.load(tmp_path / "run.jsonl").n_steps == 3


@pytest.mark.parametrize("where", ["parent is a file", "read-only folder"])
def test_a_path_that_cannot_be_written_records_nowhere_with_one_warning(tmp_path: Path, monkeypatch, where) -> None:
    if where == "parent is a file":
        (tmp_path / "taken").write_text("not a folder")
        path = tmp_path / "taken" / "run.jsonl"
    else:

        def refuse(self, *args, **kwargs):  # chmod does not stop root, who runs some CI containers
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Path, "mkdir", refuse)
        path = tmp_path / "locked" / "run.jsonl"
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with diagnose.watch(model, optimizer, path) as w:
            for _ in range(3):
                _step(model, optimizer, w, x, y)
            w.flush()
    assert [str(c.message) for c in caught if "diagnose" in str(c.message)] == [
        f"diagnose: cannot write the run file {path} "
        f"({'File exists' if where == 'parent is a file' else 'Permission denied'}); training goes on without recording"
    ]
    assert not path.exists()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_text_given_to_log_becomes_a_note_and_recording_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with diagnose.watch(model, optimizer, path, flush_seconds=3600) as w:
            for step in range(1, 201):
                _step(model, optimizer, w, x, y)
                if step == 10:
                    w.log(phase="warmup-done")
                if step == 20:
                    w.log(extra=None)
                    w.log(extra=[1, 2])
    run = diagnose.load(path)
    assert run.n_steps == 200
    notes = run.events[run.events["event"] == "note"]
    assert notes[["step", "key", "text"]].values.tolist() == [[10, "phase", "warmup-done"]]
    messages = [str(c.message) for c in caught if "diagnose" in str(c.message)]
    assert messages == ["diagnose: log(extra=...) got a NoneType, not a number or text; not recorded"]


def test_an_internal_failure_keeps_the_buffered_steps(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "run.jsonl"
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    with diagnose.watch(model, optimizer, path, flush_seconds=3600) as w:
        for _ in range(50):
            _step(model, optimizer, w, x, y)
        monkeypatch.setattr(type(w), "_log", lambda *args: 1 / 0)
        with pytest.warns(RuntimeWarning, match="recording stopped"):
            w.log(loss=1.0)
    assert diagnose.load(path).n_steps == 50


@dataclasses.dataclass
class Output:
    logits: torch.Tensor


class DataclassOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = mlp()

    def forward(self, x: torch.Tensor) -> Output:
        return Output(self.body(x))


class DictOutput(DataclassOutput):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.body(x)}


class KeepsItsOutput(nn.Module):
    """Returns nothing: the caller reads ``last`` (the loss is computed outside the model)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = mlp()
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> None:
        self.last = self.body(x)


@pytest.mark.parametrize("kind", ["dict", "dataclass", "none"])
def test_pre_clip_norm_whatever_the_model_returns(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "run.jsonl"
    model = {"dict": DictOutput, "dataclass": DataclassOutput, "none": KeepsItsOutput}[kind]()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    reported = []
    with diagnose.watch(model, optimizer, path) as w:
        for _ in range(6):
            optimizer.zero_grad()
            out = model(x)
            logits = {"dict": lambda o: o["logits"], "dataclass": lambda o: o.logits, "none": lambda _: model.last}[
                kind
            ](out)
            loss = nn.functional.cross_entropy(logits, y)
            loss.backward()
            reported.append(float(nn.utils.clip_grad_norm_(model.parameters(), 1e-3)))
            optimizer.step()
            w.log(loss=loss)
    assert min(reported) > 1e-2  # clipping changed the gradients
    assert diagnose.load(path).series("grad_norm").to_numpy() == pytest.approx(reported, rel=1e-5)


def test_a_float64_model_keeps_norms_origin_and_update_ratios(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = mlp().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    x = x.double()
    with diagnose.watch(model, optimizer, path, preset="full") as w:
        reported = [_step(model, optimizer, w, x, y) for _ in range(4)]
    run = diagnose.load(path)
    assert run.events.empty  # no probe switched itself off
    assert run.series("grad_norm").to_numpy() == pytest.approx(reported, rel=1e-9)
    assert run.layer_series("update_ratio").notna().all().all()


def test_sparse_embedding_gradients_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = nn.Sequential(nn.Embedding(50, 8, sparse=True), nn.Linear(8, 3))
    optimizers = [torch.optim.SparseAdam(model[0].parameters()), torch.optim.Adam(model[1].parameters())]
    tokens = torch.randint(0, 50, (32,), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(1))
    reported = []
    with diagnose.watch(model, optimizers[0], path) as w:
        for _ in range(4):
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(tokens), y)
            loss.backward()
            dense = model[0].weight.grad.to_dense()
            reported.append(
                float(
                    torch.linalg.vector_norm(
                        torch.cat([dense.flatten(), model[1].weight.grad.flatten(), model[1].bias.grad])
                    )
                )
            )
            optimizers[1].step()
            optimizers[0].step()
            w.log(loss=loss)
    run = diagnose.load(path)
    assert run.events.empty  # the embedding's own optimizer moves it: not "outside the optimizer"
    assert run.series("grad_norm").to_numpy() == pytest.approx(reported, rel=1e-5)


def test_a_layer_unfrozen_with_add_param_group_counts_in_the_norm(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = mlp()
    model[0].requires_grad_(False)
    optimizer = torch.optim.SGD(model[2:].parameters(), lr=0.05)
    x, y = data()
    reported = []
    with diagnose.watch(model, optimizer, path, preset="full", every={"updates": 1}) as w:
        for step in range(6):
            if step == 3:
                model[0].requires_grad_(True)
                optimizer.add_param_group({"params": model[0].parameters()})
            reported.append(_step(model, optimizer, w, x, y))
    run = diagnose.load(path)
    assert run.series("grad_norm").to_numpy() == pytest.approx(reported, rel=1e-5)
    ratios = run.layer_series("update_ratio")
    assert ratios["0"].isna().tolist() == [True] * 3 + [False] * 3  # no update ratio while frozen


def test_a_module_without_parameters_records_no_gradient_norm(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    scale = nn.Parameter(torch.ones(()))
    model = nn.ReLU()
    optimizer = torch.optim.SGD([scale], lr=0.01)
    x, _ = data()
    with diagnose.watch(model, optimizer, path) as w:
        for _ in range(3):
            optimizer.zero_grad()
            loss = (model(x) * scale).mean()
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
    assert "grad_norm" not in diagnose.load(path).steps.columns


def test_a_manual_sgd_loop_without_an_optimizer_records_the_gradient_norm(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = mlp()
    x, y = data()
    reported = []
    with diagnose.watch(model, None, path) as w:
        for _ in range(5):
            model.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            reported.append(float(nn.utils.clip_grad_norm_(model.parameters(), 1e-3)))
            with torch.no_grad():
                for param in model.parameters():
                    param -= 0.05 * param.grad
            w.log(loss=loss)
    assert diagnose.load(path).series("grad_norm").to_numpy() == pytest.approx(reported, rel=1e-5)


def _train_steps(path: Path, steps: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data(seed=seed)
    with diagnose.watch(model, optimizer, path) as w:
        for _ in range(steps):
            _step(model, optimizer, w, x, y)


def test_a_second_process_on_the_same_path_records_its_own_file(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "run.jsonl"
    holder = subprocess.Popen(  # another training process that has the path open and is still running
        [
            sys.executable,
            "-c",
            "import sys, diagnose.runfile as r; w = r.RunWriter(sys.argv[1]); "
            "w.write({'kind': 'meta', 'name': 'other'}); w.flush(); print('ready', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.warns(
            RuntimeWarning, match=r"is being written by another run; this one goes to .*run\.pid\d+\.jsonl"
        ):
            _train_steps(path, 7, seed=1)
    finally:
        holder.communicate("", timeout=60)
    own = [p for p in tmp_path.iterdir() if p.name.startswith("run.pid")]
    assert len(own) == 1 and own[0].name == f"run.pid{os.getpid()}.jsonl"
    assert diagnose.load(own[0]).n_steps == 7
    assert "step" not in path.read_text()  # nothing of ours in the other process's file
    _train_steps(path, 3, seed=2)  # once the other process is gone, the path is free again
    assert diagnose.load(path).n_steps == 3
