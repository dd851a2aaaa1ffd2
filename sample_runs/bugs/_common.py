"""What the bug scripts share: generated data, the usual evaluation, the command line, the verification.

Every script beside this module is one small training loop that carries one
real-world bug; ``--fixed`` runs the same loop with exactly that bug fixed
(the healthy twin). Each declares a module-level ``BUG`` dict:

    kind          the file's name
    description   one line: the mistake, as it appears in the code
    observable    "live" (the probes can see it during training) or "curve" (only the loss curve shows it)
    symptoms      rule codes, any of which at warning or above counts as the symptom recognised
    root_cause    a regex that a finding's title or message must match for the bug to count as named
    part          "calibration" or "heldout" (drawn once at random, see SPLIT_SEED)
    verify        {"twin": [...], "bug": [...]}: (metric, "<=" or ">=", bound) conditions on `summarize`

Data is generated with torch from a fixed seed, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

import diagnose

HERE = Path(__file__).resolve().parent
# The calibration/held-out split was drawn once: random.Random(SPLIT_SEED).shuffle over the
# sorted kinds planned for the suite, the first half calibration. Each script records its part.
SPLIT_SEED = 11
PARTS = ("calibration", "heldout")
OBSERVABLE = ("live", "curve")

Split = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# -- data ---------------------------------------------------------------------------------


def blobs(
    seed: int,
    classes: int = 4,
    dim: int = 8,
    n: int = 2048,
    val: int = 512,
    per_class: int = 3,
    label_noise: float = 0.0,
) -> Split:
    """Gaussian blobs, several per class, so the classes are not linearly separable: (train, validation).

    ``label_noise``: the fraction of training labels replaced by random ones (validation stays clean).
    """
    gen = torch.Generator().manual_seed(seed)
    centres = 2.5 * torch.randn(classes * per_class, dim, generator=gen)
    owner = torch.arange(classes * per_class) % classes
    pick = torch.randint(0, classes * per_class, (n + val,), generator=gen)
    x = centres[pick] + torch.randn(n + val, dim, generator=gen)
    y = owner[pick]
    wrong = torch.rand(n, generator=gen) < label_noise
    y[:n][wrong] = torch.randint(0, classes, (int(wrong.sum()),), generator=gen)
    return (x[:n], y[:n]), (x[n:], y[n:])


def regression(seed: int, dim: int = 8, n: int = 2048, val: int = 512, noise: float = 0.1) -> Split:
    """A smooth nonlinear target of both signs, shape (N, 1), with a little noise: (train, validation)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n + val, dim, generator=gen)
    w1, w2 = torch.randn(dim, 16, generator=gen) / math.sqrt(dim), torch.randn(16, 1, generator=gen) / 2
    y = torch.tanh(x @ w1) @ w2 + noise * torch.randn(n + val, 1, generator=gen)
    return (x[:n], y[:n]), (x[n:], y[n:])


def sequences(seed: int, steps: int = 20, features: int = 4, n: int = 2048, val: int = 512) -> Split:
    """(N, steps, features) sequences; the class (of 4) is the sign of the sum of feature 0 and of feature 1's end."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n + val, steps, features, generator=gen)
    y = (x[:, :, 0].sum(1) > 0).long() + 2 * (x[:, -4:, 1].sum(1) > 0).long()
    return (x[:n], y[:n]), (x[n:], y[n:])


def images(seed: int, classes: int = 10, n: int = 2048, val: int = 512, noise: float = 0.8) -> Split:
    """1x12x12 images: a noisy, shifted copy of one random prototype per class."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(classes, 1, 12, 12, generator=gen)
    y = torch.randint(0, classes, (n + val,), generator=gen)
    x = prototypes[y] + noise * torch.randn(n + val, 1, 12, 12, generator=gen)
    return (x[:n], y[:n]), (x[n:], y[n:])


def as_sensor_readings(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same data on a raw instrument scale: values around 500, spread about 100."""
    return tuple(40 * t + 500 for t in tensors)


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 64, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """Mini-batches of (x, y), reshuffled every epoch; whole batches are indexed at once (fast on CPU)."""
    order = RandomSampler(x, generator=torch.Generator().manual_seed(seed)) if shuffle else range(len(x))
    return DataLoader(TensorDataset(x, y), sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


# -- evaluation -----------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: Callable[..., torch.Tensor],
    task: str = "multiclass",
    threshold: float = 0.0,
) -> dict[str, float]:
    """Validation loss and accuracy (classification) or R^2 (regression), in eval mode.

    Like most evaluation functions it calls ``model.eval()`` and leaves the
    model so: the training loop calls ``model.train()`` at the top of each
    epoch. ``threshold`` is where a one-output binary model's output turns
    into class 1 (0 for logits, 0.5 for probabilities).
    """
    model.eval()
    out = model(x)
    metrics = {"val_loss": float(criterion(out, y))}
    if task == "regression":
        error = out.reshape(-1) - y.reshape(-1)
        metrics["val_r2"] = float(1 - (error**2).mean() / y.reshape(-1).var())
    elif task == "binary":
        metrics["val_accuracy"] = float(((out.reshape(-1) > threshold).float() == y.reshape(-1)).float().mean())
    elif out.shape[-1] == 1:  # one output for several classes: the value rounded to the nearest class
        metrics["val_accuracy"] = float((out.reshape(-1).round() == y.reshape(-1)).float().mean())
    else:
        metrics["val_accuracy"] = float((out.argmax(-1) == y).float().mean())
    return metrics


# -- model and loop -----------------------------------------------------------------------


def mlp(*sizes: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers += [nn.Linear(n_in, n_out), *([activation()] if i < len(sizes) - 2 else [])]
    return nn.Sequential(*layers)


class LastStep(nn.Module):
    """A recurrent layer (batch_first or not, as given) and a linear head on its output at the last position."""

    def __init__(self, rnn: nn.RNNBase, classes: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def standard_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: Callable[..., torch.Tensor]) -> Step:
    """The usual step: zero the gradients, forward, loss, backward, optimizer step; returns the loss."""

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    return step


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Callable[..., torch.Tensor],
    data: Split,
    out: Path,
    metadata: dict[str, Any],
    *,
    epochs: int = 10,
    batch_size: int = 64,
    shuffle: bool = True,
    step: Step | None = None,
    epoch_start: Callable[[], Any] | None = None,
    epoch_end: Callable[[], Any] | None = None,
    task: str = "multiclass",
    threshold: float = 0.0,
) -> None:
    """The ordinary loop under ``diagnose.watch``: per epoch ``epoch_start`` (default ``model.train()``),
    one ``step`` per batch with its loss logged, then the validation metrics and ``epoch_end``.

    A script whose bug lives in the loop passes its own ``step`` or epoch hooks,
    with the bug lines in plain sight.
    """
    (x, y), (x_val, y_val) = data
    step = step or standard_step(model, optimizer, criterion)
    train = loader(x, y, batch_size=batch_size, shuffle=shuffle)
    with diagnose.watch(model, optimizer, out, metadata=metadata) as w:
        for _epoch in range(epochs):
            (epoch_start or model.train)()
            for xb, yb in train:
                w.log(loss=step(xb, yb))
            w.log(**evaluate(model, x_val, y_val, criterion, task=task, threshold=threshold))
            if epoch_end is not None:
                epoch_end()


# -- command line ------------------------------------------------------------------------


def main(run: Callable[[bool, Path], None], bug: dict[str, Any]) -> None:
    """``python <kind>.py [--fixed] [--out PATH]``: record the buggy run (or its healthy twin)."""
    parser = argparse.ArgumentParser(description=bug["description"])
    parser.add_argument("--fixed", action="store_true", help="run the healthy twin: the same loop with the bug fixed")
    parser.add_argument("--out", type=Path, help="where to write the run file")
    args = parser.parse_args()
    out = args.out or Path(f"{bug['kind']}{'-fixed' if args.fixed else ''}.jsonl")
    torch.set_num_threads(1)
    run(args.fixed, out)
    print(f"wrote {out}")


# -- the suite -------------------------------------------------------------------------------


def kinds() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def load_script(kind: str) -> ModuleType:
    """Import ``<kind>.py`` as a module (its ``BUG`` and ``run``)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(f"bug_{kind}", HERE / f"{kind}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_pair(kind: str, bad: str | Path, good: str | Path) -> None:
    """Record the buggy run to ``bad`` and its healthy twin to ``good`` (one CPU thread).

    This is the bad/good example pair of the rule that names the bug.
    """
    script = load_script(kind)
    torch.set_num_threads(1)
    for fixed, path in ((False, Path(bad)), (True, Path(good))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a run file appends; every recording starts fresh
        script.run(fixed, path)


def summarize(path: Path) -> dict[str, float]:
    """The numbers a verification condition can name, read back from a run file.

    ``train_loss``: median of the last tenth of the logged losses; ``nonfinite``:
    1 when a logged loss is NaN/Inf; ``rss_growth_mb``: resident memory at the
    end minus after the first tenth; the last evaluation's ``val_*`` metrics.
    """
    run = diagnose.load(path)
    losses = torch.tensor(run.steps["loss"].to_numpy(dtype=float))
    finite = losses[torch.isfinite(losses)]
    tail = finite[-max(1, len(finite) // 10) :] if len(finite) else torch.tensor([math.inf])
    summary = {
        "train_loss": float(tail.median()),
        "nonfinite": float(len(finite) < len(losses)),
        "steps": float(len(losses)),
    }
    if "rss" in run.steps:
        rss = run.steps["rss"].dropna().to_numpy(dtype=float)
        if len(rss) > 1:
            summary["rss_growth_mb"] = float(rss[-1] - rss[len(rss) // 10]) / 1e6
    if len(run.evals):
        last = run.evals.iloc[-1]
        summary.update({k: float(v) for k, v in last.items() if k.startswith("val_")})
    return summary


def verify(bug: dict[str, Any], bad: dict[str, float], good: dict[str, float]) -> list[str]:
    """The verification conditions that fail: the twin must train, the bug must show.

    A metric that came out NaN (training blew up) meets every condition on the
    buggy run and none on the twin.
    """
    failures = []
    for side, summary in (("twin", good), ("bug", bad)):
        for metric, op, bound in bug["verify"][side]:
            value = summary.get(metric, math.nan)
            holds = value <= bound if op == "<=" else value >= bound
            if math.isnan(value):
                holds = side == "bug"
            if not holds:
                failures.append(f"{bug['kind']}: {side} {metric}={value:.4g}, expected {op} {bound}")
    return failures


def named(bug: dict[str, Any], findings: list[Any]) -> bool:
    """Whether a finding at warning or above names the root cause (its regex in the title or message)."""
    pattern = re.compile(bug["root_cause"], re.IGNORECASE)
    return any(pattern.search(f"{f.title}\n{f.message}") for f in alarms(findings))


def alarms(findings: list[Any]) -> list[Any]:
    """The findings at warning or error."""
    return [f for f in findings if f.severity.value in ("warning", "error")]
