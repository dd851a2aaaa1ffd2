"""The first record of a run: what was trained, on what, with which optimizer and probes."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import socket
from typing import Any

import torch
from torch import nn

from diagnose.probes.memory import model_device
from diagnose.probes.presets import Preset
from diagnose.runfile import schema


def _plain(value: Any) -> Any:
    """Optimizer hyperparameters as JSON values (tensors and tuples included)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def describe_optimizer(optimizer: Any) -> dict[str, Any] | None:
    if optimizer is None:
        return None
    groups = [{k: _plain(v) for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    for group, raw in zip(groups, optimizer.param_groups, strict=True):
        group["num_params"] = sum(p.numel() for p in raw["params"])
    return {"type": type(optimizer).__name__, "groups": groups}


def describe_model(model: nn.Module) -> dict[str, Any]:
    params = list(model.parameters())
    first = params[0] if params else None
    return {
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "dtype": str(first.dtype).replace("torch.", "") if first is not None else None,
        "modules": [[name, type(module).__name__] for name, module in model.named_modules() if name],
    }


def describe_run(
    model: nn.Module,
    optimizer: Any,
    *,
    name: str | None,
    metadata: dict[str, Any] | None,
    preset: Preset,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": schema.META,
        "schema": schema.SCHEMA,
        "name": name,
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": str(model_device(model)),
        "model": describe_model(model),
        "optimizer": describe_optimizer(optimizer),
        "metadata": dict(metadata or {}),
        "probes": {
            "preset": preset.name,
            **{f.name: getattr(preset, f.name) for f in dataclasses.fields(preset) if f.name != "name"},
        },
    }
    for key in ("layer_grads", "activations", "updates", "memory", "nvml"):
        record["probes"][key] = record["probes"][key].every
    if rank is not None:
        record["rank"] = rank
        record["world_size"] = world_size
    return record
