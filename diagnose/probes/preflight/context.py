"""What every preflight experiment works on: the user's pieces, one batch, and fresh copies to train.

An experiment never touches the user's model or optimizer. It asks the `Context`
for a `Trial`: a deep copy of the model (and of the loss function, when that
holds parameters) with a fresh optimizer over the copy, built by the user's
factory or rebuilt from the user's optimizer (class, per-group
hyperparameters and state).
"""

from __future__ import annotations

import copy
import inspect
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from diagnose.errors import InputError

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class Skip(Exception):
    """Raised by an experiment that does not apply here; the message says why."""


class OutOfTime(Skip):
    """Raised by an experiment that reached the end of the preflight's time budget before its own end."""


@dataclass(frozen=True)
class Budget:
    """The wall-clock seconds the experiments share, and when they run out."""

    seconds: float | None
    ends: float | None

    @classmethod
    def of(cls, seconds: float | None) -> Budget:
        return cls(seconds, None if seconds is None else time.monotonic() + seconds)

    @property
    def spent(self) -> bool:
        return self.ends is not None and time.monotonic() >= self.ends

    def stop_if_spent(self, done: int, planned: int) -> None:
        """Stop an experiment, after ``done`` of its ``planned`` steps, when the budget is spent."""
        if self.spent:
            raise OutOfTime(
                f"the {self.seconds:g} s time budget ran out after {done} of {planned} steps; "
                "not judged (raise budget_s, or check on a smaller batch)"
            )


@dataclass(frozen=True)
class Batch:
    """One batch split into what the model takes and what the loss compares against."""

    inputs: Any
    targets: Any

    @classmethod
    def of(cls, batch: Any) -> Batch:
        if isinstance(batch, Mapping):
            return cls(
                batch.get("inputs", batch.get("input", batch.get("x"))),
                batch.get("targets", batch.get("target", batch.get("y"))),
            )
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return cls(batch[0], batch[1])
        raise InputError(
            f"a preflight batch is (inputs, targets) or a dict with 'inputs' and 'targets'; got {type(batch).__name__}"
        )

    def to(self, device: torch.device) -> Batch:
        return Batch(
            _map_tensors(self.inputs, lambda t: t.to(device)), _map_tensors(self.targets, lambda t: t.to(device))
        )

    def first(self, n: int) -> Batch:
        """The first ``n`` samples."""
        return Batch(_map_tensors(self.inputs, lambda t: t[:n]), _map_tensors(self.targets, lambda t: t[:n]))

    def with_inputs(self, inputs: Any) -> Batch:
        return Batch(inputs, self.targets)

    @property
    def size(self) -> int:
        return int(first_tensor(self.inputs).shape[0])


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, Mapping):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def map_inputs(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    return _map_tensors(value, fn)


def first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        if isinstance(item, torch.Tensor):
            return item
    raise InputError(f"the batch's inputs hold no tensor (got {type(value).__name__})")


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(x)``; a tuple or list of inputs is passed as positional arguments, a dict as keywords."""
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


@dataclass
class Trial:
    """A disposable copy of the model, loss function and optimizer."""

    model: nn.Module
    loss_fn: Callable[..., torch.Tensor]
    optimizer: torch.optim.Optimizer
    budget: Budget = field(default_factory=lambda: Budget.of(None))

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(call_model(self.model, batch.inputs), batch.targets)

    def fit(self, batch: Batch, steps: int, until_fall: float | None = None) -> list[float]:
        """Train on ``batch`` alone for ``steps`` steps, or until the loss has fallen ``until_fall`` times
        below its first value; the loss before each step, then the final loss."""
        self.model.train()
        losses: list[float] = []
        for done in range(steps):
            if until_fall and done and losses[-1] <= losses[0] / until_fall:
                break
            self.budget.stop_if_spent(done, steps)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(batch)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():
            losses.append(float(self.loss(batch)))
        return losses


@dataclass
class Context:
    """The user's pieces, as every experiment sees them. ``batch`` is on the model's device."""

    model: nn.Module
    loss_fn: Callable[..., torch.Tensor]
    batch: Batch
    optimizer: OptimizerFactory | torch.optim.Optimizer
    metadata: dict[str, Any] = field(default_factory=dict)
    loader: Iterable[Any] | None = None
    # The first parameter group's learning rate, read off a freshly built optimizer.
    user_lr: float | None = None
    budget: Budget = field(default_factory=lambda: Budget.of(None))
    # The losses of the overfit experiment's training (see `Trial.fit`), which the input-independent
    # baseline reuses as its real-input training.
    overfit_losses: list[float] | None = None

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.model.parameters()), torch.device("cpu"))

    @property
    def num_classes(self) -> int | None:
        value = self.metadata.get("num_classes")
        return int(value) if isinstance(value, int) and value >= 2 else None

    def trial(self) -> Trial:
        """A fresh copy of the model and loss function with a fresh optimizer over it."""
        model, loss_fn = copy.deepcopy((self.model, self.loss_fn))
        optimizer = self._optimizer_for(model, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        return Trial(model, loss_fn, optimizer, self.budget)

    def _optimizer_for(self, model: nn.Module, loss_fn: Any) -> torch.optim.Optimizer:
        params = list(model.parameters()) + (list(loss_fn.parameters()) if isinstance(loss_fn, nn.Module) else [])
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            return self.optimizer(params)
        originals = list(self.model.parameters()) + (
            list(self.loss_fn.parameters()) if isinstance(self.loss_fn, nn.Module) else []
        )
        return rebuild_optimizer(self.optimizer, dict(zip(map(id, originals), params, strict=True)))

    def batches(self) -> Iterator[Batch]:
        """Batches for the learning-rate range test: the loader's, cycled, or the one batch again and again."""
        while True:
            if self.loader is None:
                yield self.batch
                continue
            for raw in self.loader:
                yield Batch.of(raw).to(self.device)


def rebuild_optimizer(optimizer: torch.optim.Optimizer, copies: Mapping[int, nn.Parameter]) -> torch.optim.Optimizer:
    """The same optimizer class and per-group hyperparameters over copied parameters, its state copied too."""
    groups = []
    for group in optimizer.param_groups:
        missing = [p for p in group["params"] if id(p) not in copies]
        if missing:
            raise InputError(
                "the optimizer holds parameters that are neither the model's nor the loss "
                "function's; pass an optimizer factory instead (lambda params: ...)"
            )
        groups.append(
            {**{k: v for k, v in group.items() if k != "params"}, "params": [copies[id(p)] for p in group["params"]]}
        )
    # Every group carries its own hyperparameters; the defaults only fill required constructor arguments.
    accepted = inspect.signature(type(optimizer)).parameters
    fresh = type(optimizer)(groups, **{k: v for k, v in optimizer.defaults.items() if k in accepted})
    fresh.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return fresh


@contextmanager
def preserved_rng(seed: int) -> Iterator[None]:
    """Seed every generator for a reproducible preflight and give the caller back the states it had."""
    states = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    )
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
