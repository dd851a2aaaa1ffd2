"""What ``diagnose preflight module:function`` gets from the user's function, and how it is found."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from diagnose.errors import ConfigError, InputError


@dataclass
class Pieces:
    """Everything a preflight needs. ``batch`` may be a loader; ``optimizer`` a factory or an optimizer."""

    model: Any
    loss_fn: Any
    batch: Any
    optimizer: Any
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Any) -> Pieces:
        """From a `Pieces`, a dict, or any object with those attributes (``loader`` stands for ``batch``)."""
        if isinstance(value, Pieces):
            return value
        get = value.get if isinstance(value, Mapping) else lambda key: getattr(value, key, None)
        found = {f.name: get(f.name) for f in fields(cls)}
        found["batch"] = found["batch"] if found["batch"] is not None else get("loader")
        missing = [name for name, v in found.items() if v is None and name != "metadata"]
        if missing:
            raise InputError(
                f"the preflight function returned no {', '.join(missing)} "
                "(expected model, loss_fn, batch or loader, optimizer, and optionally metadata)"
            )
        return cls(**{**found, "metadata": dict(found["metadata"] or {})})


def load_function(spec: str) -> Callable[[], Any]:
    """``module:function`` or ``path/to/file.py:function``; modules are looked up from the current folder too."""
    module_name, _, name = spec.rpartition(":")
    if not module_name or not name:
        raise ConfigError(f"expected MODULE:FUNCTION (e.g. train:preflight_pieces), got {spec!r}")
    module = _import(module_name)
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"{module_name} has no function {name!r}")
    return function


def _import(module_name: str) -> Any:
    try:
        if module_name.endswith(".py"):
            return _import_file(Path(module_name))
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InputError(f"cannot import {module_name}: {exc}") from None


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
