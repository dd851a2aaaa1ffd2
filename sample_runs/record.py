"""The one recorder of the example runs: tiny real models trained on CPU on generated data, probes attached.

Every rule's examples live in ``examples/<CODE>/``: ``bad*.jsonl``, runs the
rule must flag, and ``good*.jsonl``, near misses it must leave alone (a
multi-process run is a folder of rank files, ``bad/`` or ``good/``); every run
in ``examples/healthy/`` is a good example of every rule. Each scenario is
one function registered with ``@scenario(expect=CODE)`` (None for a healthy
run, ``good_of=CODE`` for a near miss): it trains and writes its run file.
Declared beside this file and registered here, so that one command records
them all: the probe-data rules' scenarios (``internals.py``), the preflight
ones (``preflight_examples.py``), the multi-process ones
(``rank_examples.py``), and the bug rules' pairs, each the bug script of
``bugs/`` whose mistake the rule names (bad) and its ``--fixed`` twin (good)::

    python sample_runs/record.py                 # record every scenario into sample_runs/examples/
    python sample_runs/record.py spikes nan_log  # only these
    python sample_runs/record.py --out /tmp/examples

Everything is seeded; each run takes a few seconds on one CPU thread.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import diagnose

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "bugs")]
import _common as bug_scripts  # noqa: E402 - the bug scripts' module, imported as they import it
import internals  # noqa: E402 - the scenarios declared beside this file
import preflight_examples  # noqa: E402
import rank_examples  # noqa: E402

EXAMPLES = HERE / "examples"
STEPS = 300
BATCH = 32
EVAL_EVERY = 20


@dataclass(frozen=True)
class Scenario:
    name: str
    expect: str | None
    record: Callable[[Path], None]
    about: str
    file: str  # where the run goes, relative to EXAMPLES
    # The finding that must come first overall, when another rule rightly outranks ``expect``
    # (a learning rate past the stability limit is the cause of the exploding gradients it makes).
    primary: str | None = None
    good_of: str | None = None  # the rule this run is a near miss of: it must leave the run alone

    @property
    def first(self) -> str | None:
        return self.primary or self.expect

    @property
    def path(self) -> Path:
        return EXAMPLES / self.file


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    expect: str | None, file: str | None = None, good_of: str | None = None, primary: str | None = None
) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    """Register a recording function under its own name, with the finding it must produce first.

    Its run goes to ``file`` (under ``examples/``), by default ``<CODE>/bad.jsonl``,
    ``<good_of>/good.jsonl`` for a near miss, or ``healthy/<name>.jsonl``.
    """

    def add(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        register(fn.__name__, expect, fn, (fn.__doc__ or "").strip(), file, primary, good_of)
        return fn

    return add


def register(
    name: str,
    expect: str | None,
    record: Callable[[Path], None],
    about: str,
    file: str | None,
    primary: str | None = None,
    good_of: str | None = None,
) -> None:
    default = (
        f"{expect}/bad.jsonl"
        if expect
        else f"{good_of}/good.jsonl"
        if good_of
        else f"healthy/{name.removeprefix('healthy_')}.jsonl"
    )
    SCENARIOS[name] = Scenario(name, expect, record, about, file or default, primary, good_of)


# -- data ----------------------------------------------------------------------------


def teacher_classes(n: int, classes: int, seed: int, dim: int = 20, label_noise: float = 0.0, val: int = 512):
    """Inputs N(0, 1) labelled by one random two-layer teacher: (train, validation) sets.

    ``label_noise`` of the training labels are replaced at random; the
    validation labels stay clean.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n + val, dim, generator=gen)
    hidden = torch.tanh(x @ torch.randn(dim, 32, generator=gen))
    y = (hidden @ torch.randn(32, classes, generator=gen)).argmax(1)
    flip = torch.rand(n, generator=gen) < label_noise
    y[:n][flip] = torch.randint(0, classes, (int(flip.sum()),), generator=gen)
    return (x[:n], y[:n]), (x[n:], y[n:])


def random_labels(n: int, classes: int, seed: int, dim: int = 20):
    """Labels drawn independently of the inputs: nothing to learn."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def smooth_regression(n: int, seed: int, dim: int = 8, noise: float = 0.05, val: int = 512):
    """A smooth nonlinear target with a little noise: (train, validation) sets."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n + val, dim, generator=gen)
    y = torch.sin(x[:, :1] * 2) * torch.cos(x[:, 1:2]) + 0.5 * x[:, 2:3] * x[:, 3:4]
    y = y + noise * torch.randn(n + val, 1, generator=gen)
    return (x[:n], y[:n]), (x[n:], y[n:])


def bar_images(n: int, seed: int, size: int = 10):
    """Noisy 1-channel images of a bar in one of four orientations."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    grid = torch.zeros(4, size, size)
    idx = torch.arange(size)
    grid[0, size // 2, :] = 1
    grid[1, :, size // 2] = 1
    grid[2, idx, idx] = 1
    grid[3, idx, size - 1 - idx] = 1
    x = grid[y] + 0.6 * torch.randn(n, size, size, generator=gen)
    return x.unsqueeze(1), y


def sign_sequences(n: int, seed: int, length: int = 12):
    """Sequences of numbers; the label says whether their sum is positive."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, 1, generator=gen)
    return x, (x.sum(dim=(1, 2)) > 0).long()


# -- models and the training loop -------------------------------------------------------


def mlp(dim_in: int, dim_out: int, hidden: int = 64, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(dim_in if i == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, dim_out))


class GRUClassifier(nn.Module):
    def __init__(self, classes: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.gru = nn.GRU(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x)[0][:, -1])


class LogProbs(nn.Module):
    """Log of softmax probabilities computed in two steps: log(0) once a probability underflows."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.softmax(logits, dim=1))


@dataclass
class Setup:
    """What one training run is made of; the scenario functions fill it in."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor] | None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metadata: dict
    steps: int = STEPS
    batch: int = BATCH
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    # Called with (step, inputs) before the forward pass; returns the inputs to use.
    corrupt: Callable[[int, torch.Tensor], torch.Tensor] | None = None
    seed: int = 0
    # "minimal" keeps the files small; scenarios about layers or NaN origins need "default" or "full".
    preset: str = "minimal"
    log_accuracy: bool = False  # also log each batch's training accuracy


def run(setup: Setup, path: Path) -> None:
    """Train with the probes attached and write the run file."""
    torch.manual_seed(setup.seed)
    x, y = setup.train
    order = torch.Generator().manual_seed(setup.seed)
    classify = setup.metadata.get("task") in ("binary", "multiclass")
    with diagnose.watch(
        setup.model,
        setup.optimizer,
        path,
        preset=setup.preset,
        metadata=setup.metadata,
        name=internals.example_name(path),
        every={"memory": 0, "nvml": 0},
    ) as w:
        for step in range(1, setup.steps + 1):
            pick = torch.randint(0, len(x), (min(setup.batch, len(x)),), generator=order)
            inputs = x[pick] if setup.corrupt is None else setup.corrupt(step, x[pick])
            setup.optimizer.zero_grad()
            out = setup.model(inputs)
            loss = setup.loss_fn(out, y[pick])
            loss.backward()
            setup.optimizer.step()
            if setup.scheduler is not None:
                setup.scheduler.step()
            w.log(loss=loss, **({"accuracy": (out.argmax(1) == y[pick]).float().mean()} if setup.log_accuracy else {}))
            if setup.val is not None and step % EVAL_EVERY == 0:
                w.log(**evaluate(setup, classify))


@torch.no_grad()
def evaluate(setup: Setup, classify: bool) -> dict[str, float]:
    x, y = setup.val
    setup.model.eval()
    out = setup.model(x)
    setup.model.train()
    metrics = {"val_loss": float(setup.loss_fn(out, y))}
    if classify:
        metrics["val_accuracy"] = float((out.argmax(1) == y).float().mean())
    return metrics


def classifier_setup(
    classes: int = 4,
    *,
    lr: float = 3e-3,
    seed: int = 0,
    n: int = 2048,
    hidden: int = 64,
    optimizer: str = "adam",
    label_noise: float = 0.0,
    **options,
) -> Setup:
    """A teacher-labelled classification task with an MLP; ``options`` override Setup fields."""
    torch.manual_seed(seed)
    model = mlp(20, classes, hidden)
    opt = (
        torch.optim.Adam(model.parameters(), lr)
        if optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr, momentum=0.9 if optimizer == "momentum" else 0.0)
    )
    task = "binary" if classes == 2 else "multiclass"
    train, val = teacher_classes(n, classes, seed, label_noise=label_noise)
    return Setup(
        model=model,
        optimizer=opt,
        train=train,
        val=val,
        loss_fn=F.cross_entropy,
        metadata={"task": task, "num_classes": classes, "loss_fn": "cross_entropy"},
        seed=seed,
        **options,
    )


# -- healthy runs --------------------------------------------------------------------------


@scenario(expect=None)
def healthy_mlp(path: Path) -> None:
    """4-class MLP with Adam 3e-3: the loss falls fast, then keeps improving slowly."""
    run(classifier_setup(4), path)


@scenario(expect=None)
def healthy_binary(path: Path) -> None:
    """Binary MLP with SGD and momentum."""
    run(classifier_setup(2, lr=0.05, optimizer="momentum", seed=1), path)


@scenario(expect=None)
def healthy_regression(path: Path) -> None:
    """MLP regression on a smooth target with Adam and a cosine schedule over the whole run."""
    torch.manual_seed(2)
    model = mlp(8, 1, 64)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    train, val = smooth_regression(2048, 2)
    run(
        Setup(
            model=model,
            optimizer=opt,
            train=train,
            val=val,
            loss_fn=F.mse_loss,
            metadata={"task": "regression", "loss_fn": "mse"},
            scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS),
            seed=2,
        ),
        path,
    )


@scenario(expect=None)
def healthy_cnn(path: Path) -> None:
    """Small CNN on noisy bar images, SGD with momentum."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    run(
        Setup(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), 0.05, momentum=0.9),
            train=bar_images(2048, 3),
            val=bar_images(512, 1003),
            loss_fn=F.cross_entropy,
            metadata={"task": "multiclass", "num_classes": 4, "loss_fn": "cross_entropy"},
            seed=3,
        ),
        path,
    )


@scenario(expect=None)
def healthy_gru(path: Path) -> None:
    """GRU classifying whether a sequence sums above zero."""
    torch.manual_seed(4)
    model = GRUClassifier()
    run(
        Setup(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), 1e-2),
            train=sign_sequences(2048, 4),
            val=sign_sequences(512, 1004),
            loss_fn=F.cross_entropy,
            metadata={"task": "binary", "num_classes": 2, "loss_fn": "cross_entropy"},
            seed=4,
        ),
        path,
    )


# -- one bad run per problem --------------------------------------------------------------


@scenario(expect="LR001")
def lr_too_high(path: Path) -> None:
    """Adam at 0.5 from the first step: updates overshoot and the loss climbs."""
    run(classifier_setup(4, lr=0.5, seed=5), path)


@scenario(expect="LR002")
def lr_too_high_late(path: Path) -> None:
    """SGD with momentum at a rate that makes fast early progress, then bounces above its best."""
    run(classifier_setup(4, lr=0.25, optimizer="momentum", seed=6), path)


@scenario(expect="LR003")
def lr_too_low(path: Path) -> None:
    """Plain SGD at 0.02 on 10 classes: the loss creeps down in a straight line."""
    run(classifier_setup(10, lr=0.02, optimizer="sgd", seed=7), path)


@scenario(expect="LR004")
def lr_decayed_early(path: Path) -> None:
    """A linear decay set for a tenth of the steps: the rate is zero for the last 90%."""
    setup = classifier_setup(4, lr=3e-3, seed=8)
    setup.scheduler = torch.optim.lr_scheduler.LambdaLR(setup.optimizer, lambda s: max(0.0, 1 - s / (STEPS / 10)))
    run(setup, path)


@scenario(expect="OVF001")
def overfitting(path: Path) -> None:
    """A wide MLP on 64 examples with 30% wrong labels: it memorises them and validation loss turns up."""
    run(classifier_setup(4, lr=3e-3, seed=9, n=64, hidden=256, label_noise=0.3, steps=400), path)


def _chance(classes: int, seed: int, path: Path) -> None:
    torch.manual_seed(seed)
    model = mlp(20, classes, 32)
    run(
        Setup(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), 1e-3),
            train=random_labels(8192, classes, seed),
            val=random_labels(512, classes, seed + 1000),
            loss_fn=F.cross_entropy,
            seed=seed,
            metadata={
                "task": "binary" if classes == 2 else "multiclass",
                "num_classes": classes,
                "loss_fn": "cross_entropy",
            },
        ),
        path,
    )


@scenario(expect="CH001")
def chance_binary(path: Path) -> None:
    """Binary labels independent of the inputs: the loss stays at ln 2."""
    _chance(2, 10, path)


@scenario(expect="CH001", file="CH001/bad_10_classes.jsonl")
def chance_10_classes(path: Path) -> None:
    """10-class labels independent of the inputs: the loss stays at ln 10."""
    _chance(10, 11, path)


@scenario(expect="CH002")
def memorised_random_labels(path: Path) -> None:
    """A wide MLP on 256 examples whose labels have nothing to do with the inputs: it memorises them,
    and the validation set stays at chance (what inputs and labels shuffled separately look like)."""
    torch.manual_seed(13)
    model = mlp(20, 4, 256)
    run(
        Setup(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), 3e-3),
            train=random_labels(256, 4, 13),
            val=random_labels(512, 4, 1013),
            loss_fn=F.cross_entropy,
            seed=13,
            steps=400,
            metadata={"task": "multiclass", "num_classes": 4, "loss_fn": "cross_entropy"},
        ),
        path,
    )


@scenario(expect="PLT001")
def stalled(path: Path) -> None:
    """A linear model on a nonlinear target: it learns the little it can, then stays flat."""
    torch.manual_seed(12)
    model = nn.Linear(8, 1)
    train, val = smooth_regression(2048, 12)
    run(
        Setup(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), 3e-2),
            train=train,
            val=val,
            loss_fn=F.mse_loss,
            metadata={"task": "regression", "loss_fn": "mse"},
            seed=12,
        ),
        path,
    )


@scenario(expect="SPK001")
def spikes(path: Path) -> None:
    """A healthy classifier fed a corrupt batch (inputs scaled 30x) every 70 steps."""
    run(classifier_setup(4, seed=13, corrupt=lambda step, x: x * 30 if step % 70 == 0 else x), path)


@scenario(expect="NF001")
def nan_log(path: Path) -> None:
    """log(softmax) by hand on separable data at a high rate: a probability underflows to 0, log(0) follows."""
    torch.manual_seed(14)
    model = nn.Sequential(mlp(20, 4, 64), LogProbs())
    train, val = teacher_classes(2048, 4, 14)
    run(
        Setup(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), 0.5, momentum=0.9),
            train=train,
            val=val,
            loss_fn=F.nll_loss,
            preset="default",
            metadata={"task": "multiclass", "num_classes": 4, "loss_fn": "nll"},
            seed=14,
        ),
        path,
    )


@scenario(expect="INIT001")
def bad_init(path: Path) -> None:
    """Last layer initialised 100x too large: the first loss is many times ln 4."""
    setup = classifier_setup(4, seed=15)
    with torch.no_grad():
        setup.model[-1].weight.mul_(100)
    run(setup, path)


@scenario(expect="NOI001")
def noisy_batch(path: Path) -> None:
    """Batch size 1 with SGD: each step's loss is one example's, and the trend drowns in noise."""
    run(classifier_setup(4, lr=0.01, optimizer="momentum", seed=16, batch=1), path)


@scenario(expect="ZL001")
def label_leak(path: Path) -> None:
    """The label is also an input feature: the loss reaches exactly zero."""
    setup = classifier_setup(4, lr=3e-2, seed=17)
    x, y = setup.train
    setup.train = (torch.cat([x[:, :-4], 50 * F.one_hot(y, 4).float()], dim=1), y)
    vx, vy = setup.val
    setup.val = (torch.cat([vx[:, :-4], 50 * F.one_hot(vy, 4).float()], dim=1), vy)
    run(setup, path)


@scenario(expect="NF002")
def nan_validation(path: Path) -> None:
    """Validation labels left at the padding index -100: cross-entropy averages over no target, NaN at every
    evaluation while training is healthy."""
    setup = classifier_setup(4)
    x, y = setup.val
    setup.val = (x, torch.full_like(y, -100))  # the ignore_index of F.cross_entropy
    run(setup, path)


@scenario(expect="NF003")
def late_blow_up(path: Path) -> None:
    """A healthy classifier whose learning rate is raised 3000x for its last 8 steps (a schedule restart gone
    wrong): the per-step loss comes back down, the final evaluation is four orders of magnitude above the best."""
    setup = classifier_setup(4)
    optimizer = setup.optimizer

    def restart(step: int, inputs: torch.Tensor) -> torch.Tensor:
        if step == STEPS - 8:
            for group in optimizer.param_groups:
                group["lr"] *= 3000
        return inputs

    setup.corrupt = restart
    run(setup, path)


# -- self-supervised: SimSiam with and without its stop-gradient ------------------------------


class SimSiam(nn.Module):
    """SimSiam's two parts (Chen & He 2021) at toy size: ``forward`` is the encoder, whose output is judged."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(20, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 32))
        self.predictor = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def simsiam(path: Path, stop_gradient: bool) -> None:
    """Two noisy views of each input; the loss is minus the cosine between one view's prediction and the
    other view's embedding, symmetrised, with the embedding detached (SimSiam) or not (it collapses)."""
    torch.manual_seed(21)
    data = torch.randn(2048, 20, generator=torch.Generator().manual_seed(21))
    model = SimSiam()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = torch.Generator().manual_seed(21)
    metadata = {"task": "self-supervised", "method": "SimSiam", "stop_gradient": stop_gradient}
    every = {"memory": 0, "nvml": 0, "activations": 10, "layer_grads": 0, "updates": 0}
    with diagnose.watch(model, optimizer, path, metadata=metadata, name=internals.example_name(path), every=every) as w:
        for _ in range(150):
            batch = data[torch.randint(0, len(data), (128,), generator=order)]
            optimizer.zero_grad()
            z1 = model(batch + 0.3 * torch.randn_like(batch))
            z2 = model(batch * (1 + 0.2 * torch.randn_like(batch)))
            t1, t2 = (z1.detach(), z2.detach()) if stop_gradient else (z1, z2)
            p1, p2 = model.predictor(z1), model.predictor(z2)
            loss = -(F.cosine_similarity(p1, t2).mean() + F.cosine_similarity(p2, t1).mean()) / 2
            loss.backward()
            optimizer.step()
            w.log(loss=loss)


@scenario(expect="ACT003", file="ACT003/bad_direction.jsonl")
def simsiam_no_stop_gradient(path: Path) -> None:
    """SimSiam without its stop-gradient: the embeddings' norm grows while they all turn one way."""
    simsiam(path, stop_gradient=False)


@scenario(expect=None, file="ACT003/good.jsonl")
def simsiam_stop_gradient(path: Path) -> None:
    """SimSiam as published, with the stop-gradient: the embeddings stay spread over directions."""
    simsiam(path, stop_gradient=True)


# -- bug rules that no script of bugs/ makes fire: the bug, and the same loop without it ---------------


def rounded_counts(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Whole-number targets (counts 0..6) of a smooth function of the inputs."""
    (x, y), (vx, vy) = smooth_regression(2048, seed)
    return (x, (3 * y + 3).round().clamp(0, 6)), (vx, (3 * vy + 3).round().clamp(0, 6))


def _count_regression(path: Path, rounded: bool) -> None:
    torch.manual_seed(19)
    model = mlp(8, 1, 64)
    train, val = rounded_counts(19)

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out.round() if rounded else out, y)

    run(
        Setup(model, torch.optim.Adam(model.parameters(), 3e-3), train, val, loss_fn, {"task": "regression"}, seed=19),
        path,
    )


@scenario(expect="BUG004")
def rounded_prediction_loss(path: Path) -> None:
    """Counts regressed with the prediction rounded inside the loss (round() has a zero gradient everywhere):
    the loss never reaches the weights."""
    _count_regression(path, rounded=True)


@scenario(expect=None, good_of="BUG004")
def raw_prediction_loss(path: Path) -> None:
    """The same count regression with the loss on the raw prediction (round only for reporting)."""
    _count_regression(path, rounded=False)


def _softmax_classifier(path: Path, softmax: bool) -> None:
    """The loop of bugs/softmax_into_ce.py (10 separable blobs), under the minimal preset: the loss and
    little else, as another tool's log holds it (no probe sees what the loss is given)."""
    torch.manual_seed(0)
    model = bug_scripts.mlp(16, 64, 10)
    if softmax:
        model.append(nn.Softmax(dim=1))
    train, val = bug_scripts.blobs(seed=3, classes=10, dim=16, per_class=1)
    metadata = {"task": "multiclass", "num_classes": 10, "loss_fn": "cross_entropy"}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    run(Setup(model, optimizer, train, val, F.cross_entropy, metadata, steps=320, batch=64), path)


@scenario(expect="BUG007")
def softmax_into_cross_entropy(path: Path) -> None:
    """A softmax as the model's last layer, fed to cross-entropy (which applies log_softmax itself): the loss
    flattens on log(1 + 9/e) = 1.461 for 10 classes however well the model classifies."""
    _softmax_classifier(path, softmax=True)


@scenario(expect=None, good_of="BUG007")
def logits_into_cross_entropy(path: Path) -> None:
    """The same classifier giving cross-entropy its logits: the loss passes 1.461 on its way down."""
    _softmax_classifier(path, softmax=False)


def class_balanced_cross_entropy(logits: torch.Tensor, y: torch.Tensor, *, guard: str) -> torch.Tensor:
    """Cross-entropy averaged per class, then over the classes present in the batch.

    ``guard="where"`` skips an absent class with torch.where: the forward is
    finite, but the untaken branch's 0/0 still reaches the gradient as NaN.
    ``guard="clamp"`` divides by the count clamped to 1 instead.
    """
    per_sample = F.cross_entropy(logits, y, reduction="none")
    onehot = F.one_hot(y, logits.shape[1]).to(per_sample.dtype)
    totals, counts = onehot.T @ per_sample, onehot.sum(0)
    if guard == "where":
        means = torch.where(counts > 0, totals / counts, torch.zeros_like(totals))
    else:
        means = totals / counts.clamp_min(1)
    return means.sum() / (counts > 0).sum()


def _balanced(path: Path, guard: str) -> None:
    setup = classifier_setup(10, seed=21, batch=16, steps=100, preset="default")
    setup.loss_fn = partial(class_balanced_cross_entropy, guard=guard)
    run(setup, path)


@scenario(expect="BUG014", primary="NF002")  # the NaN weights make every later evaluation NaN too
def class_mean_guarded_by_where(path: Path) -> None:
    """A class-balanced cross-entropy that skips classes absent from the batch (16 samples, 10 classes) with
    torch.where: the loss is finite, its gradient NaN from the first batch that lacks a class."""
    _balanced(path, guard="where")


@scenario(expect=None, good_of="BUG014")
def class_mean_guarded_by_clamp(path: Path) -> None:
    """The same loss dividing by the class count clamped to 1."""
    _balanced(path, guard="clamp")


def _nll(path: Path, log_softmax: bool) -> None:
    setup = classifier_setup(4, lr=3e-3, seed=20)
    setup.loss_fn = lambda out, y: F.nll_loss(F.log_softmax(out, dim=1) if log_softmax else out, y)
    setup.metadata["loss_fn"] = "nll"
    run(setup, path)


@scenario(expect="BUG015")
def nll_on_raw_scores(path: Path) -> None:
    """F.nll_loss on the raw logits (log_softmax forgotten): the loss is minus the true logit and runs to
    minus infinity."""
    _nll(path, log_softmax=False)


@scenario(expect=None, good_of="BUG015")
def nll_on_log_probabilities(path: Path) -> None:
    """The same loop with log_softmax before F.nll_loss."""
    _nll(path, log_softmax=True)


@scenario(expect="OVF002", primary="OVF001")
def accuracy_gap(path: Path) -> None:
    """A wide MLP (256 units) on 2048 examples for 400 steps, training accuracy logged: it fits the training
    set ever better while validation accuracy stops rising and slips."""
    run(classifier_setup(4, seed=9, hidden=256, steps=400, log_accuracy=True), path)


@scenario(expect=None, good_of="OVF002")
def accuracy_close(path: Path) -> None:
    """A 64-unit MLP on 16384 examples for the same 400 steps: training and validation accuracy rise together."""
    run(classifier_setup(4, seed=9, n=16384, steps=400, log_accuracy=True), path)


class PairwiseScores(nn.Module):
    """Classifies a sequence from its tokens' pairwise similarities, an (L x L) matrix per sample as
    attention computes it."""

    def __init__(self, dim: int = 8, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(1, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        weights = torch.softmax(h @ h.transpose(1, 2) / math.sqrt(h.shape[-1]), dim=-1)
        return self.head((weights @ h).mean(dim=1))


RUNAWAY_LENGTH = 50_000  # one record's length: its batch's (L x L) scores need 32 * 50,000^2 * 4 bytes = 320 GB


def _pairwise(path: Path, truncate: bool) -> None:
    torch.manual_seed(22)
    model = PairwiseScores()

    def pad_to_longest(step: int, x: torch.Tensor) -> torch.Tensor:
        """The loader pads each batch to its longest record; at step 40 one record is RUNAWAY_LENGTH long."""
        if step != 40 or truncate:
            return x
        return torch.cat([x, torch.zeros(len(x), RUNAWAY_LENGTH - x.shape[1], 1)], dim=1)

    setup = Setup(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), 1e-2),
        train=sign_sequences(2048, 22),
        val=sign_sequences(512, 1022),
        loss_fn=F.cross_entropy,
        metadata={"task": "binary", "num_classes": 2, "loss_fn": "cross_entropy"},
        steps=80,
        corrupt=pad_to_longest,
        seed=22,
    )
    try:
        run(setup, path)
    except RuntimeError as exc:  # the training dies, as the user's would; the run file keeps what led there
        if "can't allocate memory" not in str(exc):
            raise


@scenario(expect="MEM002")
def runaway_sequence_length(path: Path) -> None:
    """Pairwise scores over each sequence; the batch padded to one runaway record of 50,000 tokens asks the
    CPU allocator for 320 GB at step 40, and training dies out of memory."""
    _pairwise(path, truncate=False)


@scenario(expect=None, good_of="MEM002")
def truncated_sequence_length(path: Path) -> None:
    """The same training with every record truncated to the usual 12 tokens."""
    _pairwise(path, truncate=True)


# -- the scenarios declared beside this file ---------------------------------------------------


def named_after_example(write: Callable[[Path], None]) -> Callable[[Path], None]:
    """For writers that name the run after its file (preflight, the bug scripts): write
    ``<CODE>-bad.jsonl`` in a scratch folder, then move it to ``<CODE>/bad.jsonl``."""

    def record(path: Path) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            named = Path(scratch) / f"{internals.example_name(path)}.jsonl"
            write(named)
            shutil.move(named, path)

    return record


def _register_declared() -> None:
    for module, wrap in ((internals, None), (preflight_examples, named_after_example), (rank_examples, None)):
        for name, declared in module.SCENARIOS.items():
            write = partial(module.record, declared)
            register(
                name,
                declared.expect,
                wrap(write) if wrap else write,
                declared.about,
                declared.file,
                declared.primary,
                declared.good_of,
            )


_register_declared()


# -- the bug rules: the bug script whose mistake each one names, and its fixed twin ---------------

# code -> (kind of sample_runs/bugs/, the finding that rightly comes first on the buggy run when not the code)
# BUG004, BUG007, BUG014 and BUG015 have scenarios of their own above.
BUG_KINDS: dict[str, tuple[str, str | None]] = {
    "BUG001": ("no_zero_grad", None),
    "BUG002": ("partial_optimizer", None),
    "BUG003": ("step_before_backward", "BUG016"),
    "BUG005": ("dropout_off_eval", None),
    "BUG006": ("sigmoid_into_bce_logits", None),
    "BUG008": ("mse_broadcast", None),
    "BUG009": ("unnormalized_features", "ACT003"),
    "BUG010": ("constant_init", None),
    "BUG011": ("functional_tanh_saturation", None),
    "BUG012": ("scheduler_per_batch", None),
    "BUG013": ("sorted_by_label", None),
    "BUG016": ("step_before_backward", None),
    "BUG017": ("clip_too_small", None),
    "BUG018": ("accumulation_no_divide", None),
    "BUG019": ("rnn_no_clip", None),
    "BUG020": ("weight_decay_huge", None),
    "BUG021": ("wrong_loss_for_task", None),
    "BUG022": ("missing_activation", None),
    "BUG023": ("item_cuts_graph", None),
    "BUG024": ("labels_shuffled_apart", None),
    "BUG025": ("deep_sigmoid_vanishing", None),
    "BUG026": ("detach_cuts_graph", None),
    "BUG027": ("rnn_batch_first", None),
    "BUG028": ("loss_list_memory", None),
    "BUG029": ("val_not_normalized", None),
}


def _bug_script_run(kind: str, fixed: bool, path: Path) -> None:
    bug_scripts.load_script(kind).run(fixed, path)


def _register_bug_pairs() -> None:
    for code, (kind, primary) in BUG_KINDS.items():
        about = bug_scripts.load_script(kind).BUG["description"]
        bad, good = partial(_bug_script_run, kind, False), partial(_bug_script_run, kind, True)
        # One mistake can be named by two rules (step before backward: BUG003 and BUG016), each with its pair.
        name = f"bug-{kind}" if f"bug-{kind}" not in SCENARIOS else f"bug-{kind}-{code.lower()}"
        register(name, code, named_after_example(bad), f"bugs/{kind}.py: {about}", None, primary)
        twin = f"bugs/{kind}.py --fixed: the same loop with the bug fixed"
        register(f"{name}-fixed", None, named_after_example(good), twin, None, good_of=code)


_register_bug_pairs()
# PLT001's near miss: a training loss held up by 10% label noise that only the training batches carry,
# above a validation loss less than half of it.
register(
    "bug-overfitting_tiny_data-fixed",
    None,
    named_after_example(partial(_bug_script_run, "overfitting_tiny_data", True)),
    "bugs/overfitting_tiny_data.py --fixed: 10% label noise holds the training loss up, not a stall",
    None,
    good_of="PLT001",
)


def _register_bug_variant(kind: str, code: str, primary: str | None, fixed_too: bool = False) -> None:
    """A bug script as a further example of a symptom-level rule (``<CODE>/bad_<kind>.jsonl``): a second
    way the rule decides, that its own bad example does not show. With ``fixed_too`` its twin is a
    near miss of the rule (``<CODE>/good_<kind>.jsonl``)."""
    about = bug_scripts.load_script(kind).BUG["description"]
    bad = named_after_example(partial(_bug_script_run, kind, False))
    register(f"{code.lower()}-{kind}", code, bad, f"bugs/{kind}.py: {about}", f"{code}/bad_{kind}.jsonl", primary)
    if fixed_too:
        good = named_after_example(partial(_bug_script_run, kind, True))
        twin = f"bugs/{kind}.py --fixed: the same loop with the bug fixed"
        register(f"{code.lower()}-{kind}-fixed", None, good, twin, f"{code}/good_{kind}.jsonl", good_of=code)


# LR003 on the log scale (small update ratios). ACT002 through a functional tanh and PLT001 at full
# accuracy need no file of their own: BUG011/bad and BUG007/bad show them.
_register_bug_variant("lr_too_low", "LR003", None, fixed_too=True)


# -- command line ---------------------------------------------------------------------------


def record(names: list[str], out: Path) -> list[Path]:
    """Record the named scenarios (all when empty) into ``out``; returns the files written."""
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    torch.set_num_threads(1)  # tiny models: more threads only add contention
    written = []
    for name in names or list(SCENARIOS):
        path = out / SCENARIOS[name].file
        path.parent.mkdir(parents=True, exist_ok=True)
        # A run file is appended to, a folder of rank files added to: start each recording afresh.
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        SCENARIOS[name].record(path)
        written.append(path)
    return written


def size_kb(path: Path) -> int:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return math.ceil(sum(p.stat().st_size for p in files) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="scenarios to record (default: all)")
    parser.add_argument("--out", type=Path, default=EXAMPLES, help="folder for the examples")
    args = parser.parse_args()
    for path in record(args.names, args.out):
        print(f"{path} ({size_kb(path)} KB)")


if __name__ == "__main__":
    main()
