"""Plain-text training logs, where a pattern can be recognised:

- nanoGPT ``log.txt``: ``<step> train|val|hella <value>`` per line;
- key-value lines with a step or epoch marker, such as nanoGPT's stdout
  ``step 10 | loss: 3.1 | lr 6e-4 | norm: 0.33`` or
  ``Epoch [3/50], Train Loss: 1.94, Val Loss: 1.91``.

A line with a loss but no marker (nanoGPT's ``validation loss: 3.07``) belongs
to the next marked line's step: that is where the training loop goes on.

- the Hugging Face Trainer's printed log, ``{'loss': 0.52, 'learning_rate':
  5e-05, 'epoch': 0.1}`` per logging step, ``{'eval_loss': ...}`` per evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from diagnose.errors import InputError
from diagnose.readers import frames
from diagnose.run import Run
from diagnose.runfile import schema

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)\b"
_NANOGPT_LINE = re.compile(rf"^\s*(\d+)\s+([A-Za-z_]\w*)\s+({_NUM})\s*$", re.IGNORECASE)
_NANOGPT_NAMES = {"train": "loss", "val": "val_loss", "hella": "val_hellaswag"}
_MARKER = re.compile(r"\b(step|iter|iteration|epoch)\b\s*[:=#]?\s*\[?\s*(\d+)(?:\s*/\s*\d+)?\s*\]?", re.IGNORECASE)
# "Train Loss: 1.94", "lr 6e-4", "acc=97.1%", "dt: 354.7ms": a key of up to three words, a number, a unit.
_KEY = r"(?<![\w.])([A-Za-z][\w./-]*(?: [A-Za-z][\w./-]*){0,2})"
_PAIR = re.compile(rf"{_KEY}\s*(?:[:=]\s*|\s+)({_NUM})(?:%|[A-Za-z/]+)?(?![\w.])", re.IGNORECASE)
_MARKER_KEYS = {"step", "iter", "iteration", "epoch"}
UNRECOGNISED = ("no training log pattern recognised (expected lines like 'step 10 | loss 0.52 | lr 1e-3', "
                "'Epoch [1/10], Train Loss: 0.52, Val Loss: 0.61' or nanoGPT's '10 train 0.52')")


# A document (README, notes, a list of sources) mentions steps and losses in its tables and lists; only
# its plain lines (a pasted log) can make it a training log.
DOCUMENT_SUFFIXES = {".md", ".markdown", ".rst", ".adoc"}
NOT_A_LOG = "a document, not a training log: no run read from it (pass --format-in text to read it anyway)"
_DOCUMENT_STRUCTURE = re.compile(r"^\s*(?:[|#>]|[-*+]\s|\d+[.)]\s)")


def plain_lines(lines: list[str]) -> list[str]:
    """The lines of a document that are not headings, table rows, list items or quotes."""
    return [line for line in lines if not _DOCUMENT_STRUCTURE.match(line)]


def looks_like_nanogpt(lines: list[str]) -> bool:
    """Most lines are ``<step> <name> <value>``."""
    lines = [line for line in lines if line.strip()]
    hits = sum(1 for line in lines if _NANOGPT_LINE.match(line))
    return bool(lines) and hits >= 0.9 * len(lines)


def looks_like_key_values(lines: list[str]) -> bool:
    """Some line holds a loss and a step or epoch marker, or comes right after a marker line."""
    marked = False
    for line in lines:
        has_marker = bool(_MARKER.search(line))
        if (has_marker or marked) and _has_loss(line):
            return True
        marked = has_marker or (marked and not line.strip())
    return False


def _has_loss(line: str) -> bool:
    return any("loss" in key.lower() for key, _ in _PAIR.findall(line))


_TRAINER_ENTRY = re.compile(r"\{\s*'[^']+'\s*:[^{}]*\}")
_TRAINER_PAIR = re.compile(rf"'([^']+)'\s*:\s*'?({_NUM})'?")


def looks_like_trainer_stdout(lines: list[str]) -> bool:
    return any(_trainer_entry(line) for line in lines)


def _trainer_entry(line: str) -> dict[str, str]:
    """The logged dict on a line of the Trainer's output, when it holds a loss."""
    match = _TRAINER_ENTRY.search(line)
    pairs = dict(_TRAINER_PAIR.findall(match.group(0))) if match else {}
    return pairs if any(k == "loss" or (k.startswith("eval_") and k.endswith("loss")) for k in pairs) else {}


def read_trainer_stdout(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    """The printed log has no step: the n-th logged training entry is step n, an evaluation takes the latest."""
    path = Path(path)
    rows = []
    logged = 0
    for line in _final_lines(frames.read_text(path)):
        entry = _trainer_entry(line)
        if not entry or "train_runtime" in entry:  # the summary at the end is not a step
            continue
        logged += "loss" in entry
        rows.append({"step": logged, **entry})
    if not rows:
        raise InputError(f"{path}: {UNRECOGNISED}")
    meta = {"step_from": "count of logged training entries (the printed log has no step)"}
    return _runs(rows, path, "huggingface", mapping, frames.WarningLog(), frames.default_name, meta)


def read_nanogpt_log(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    path = Path(path)
    warnings = frames.WarningLog()
    rows = []
    for number, line in enumerate(frames.read_text(path).splitlines(), start=1):
        match = _NANOGPT_LINE.match(line)
        if match:
            rows.append({"step": match.group(1), match.group(2): match.group(3)})
        elif line.strip():
            warnings.add("other-line", f"line {number}: not '<step> <name> <value>'; ignored")
    if not rows:
        raise InputError(f"{path}: {UNRECOGNISED}")
    return _runs(rows, path, "nanogpt", mapping, warnings, _nanogpt_name)


def _nanogpt_name(raw: str) -> str:
    return _NANOGPT_NAMES.get(raw) or frames.default_name(raw)


def read_text_log(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    path = Path(path)
    rows: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []  # losses waiting for the next marked line
    current: dict[str, str] = {}  # a marker on a line of its own ("Epoch 3/10" above Keras' progress line)
    for line in _final_lines(frames.read_text(path)):
        marker = _markers(line)
        values = {key: value for key, value in _PAIR.findall(line)
                  if schema.normalise_key(key) not in _MARKER_KEYS}
        if marker:
            rows.extend(dict(p, **marker) for p in pending)
            pending, current = [], ({} if values else marker)
            if values:
                rows.append({**marker, **values})
        elif _has_loss(line) and values:
            if current:
                rows.append({**current, **values})
            else:
                pending.append(values)
    if not rows:
        raise InputError(f"{path}: {UNRECOGNISED}")
    rows.extend(dict(p, step=rows[-1]["step"]) for p in pending)
    return _runs(rows, path, "text", mapping, frames.WarningLog(), frames.default_name)


def _final_lines(text: str) -> list[str]:
    """Lines as the terminal showed them last: a progress bar redrawn with ``\r`` keeps its final state."""
    return [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]


def _markers(line: str) -> dict[str, str]:
    """``{"step": N}`` from the line's step (or iteration, or epoch) marker; the epoch too when both."""
    found = {m.group(1).lower(): m.group(2) for m in _MARKER.finditer(line)}
    for key in ("step", "iter", "iteration", "epoch"):
        if key in found:
            marker = {"step": found[key]}
            if key != "epoch" and "epoch" in found:
                marker["epoch"] = found["epoch"]
            return marker
    return {}


def _runs(rows: list[dict[str, Any]], path: Path, format: str, mapping: Mapping[str, str] | None,
          warnings: frames.WarningLog, namer, meta: dict[str, Any] | None = None) -> list[Run]:
    raw = pd.DataFrame(rows)
    step = raw.pop("step")
    table = frames.rename_columns(raw, path, mapping, namer)
    table.insert(0, "step", step)
    return frames.build_runs(table, path=path, format=format, warnings=warnings, meta=meta)
