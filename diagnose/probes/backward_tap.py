"""Listeners told about every tensor that ``backward()`` is called on, before the backward pass runs.

torch has no hook for "backward is about to start on this tensor", and that
tensor is the training loss, with its whole graph still alive. So
``torch.Tensor.backward`` is wrapped while at least one listener is
registered and restored when the last one goes. Frameworks call it too
(Lightning, accelerate, a GradScaler's scaled loss). An exception from a
listener is dropped so that backward runs, except `TrainingStopped`, which
is meant for the training loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from diagnose.live.policy import TrainingStopped

Listener = Callable[[torch.Tensor], None]

_listeners: dict[int, Listener] = {}
_ids = itertools.count()
_original: Callable[..., Any] | None = None


def _backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    for listener in list(_listeners.values()):
        try:
            listener(self)
        except TrainingStopped:  # stop_on's stop, meant for the training loop
            raise
        except Exception:  # noqa: BLE001 - backward must run whatever a listener did
            pass
    return _original(self, *args, **kwargs)


class TapHandle:
    """Removes its listener (and the wrapper, with the last one); safe to call twice."""

    def __init__(self, key: int) -> None:
        self.key = key

    def remove(self) -> None:
        global _original
        _listeners.pop(self.key, None)
        if not _listeners and _original is not None and torch.Tensor.backward is _backward:
            torch.Tensor.backward = _original
            _original = None


def add(listener: Listener) -> TapHandle:
    """Call ``listener(tensor)`` before each ``tensor.backward()`` until the handle is removed."""
    global _original
    if _original is None and torch.Tensor.backward is not _backward:
        _original = torch.Tensor.backward
        torch.Tensor.backward = _backward
    key = next(_ids)
    _listeners[key] = listener
    return TapHandle(key)
