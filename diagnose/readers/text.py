"""Plain-text training logs, where a pattern can be recognised:

- nanoGPT ``log.txt``: ``<step> train|val|hella <value>`` per line;
- key-value lines with a step or epoch marker, such as nanoGPT's stdout
  ``step 10 | loss: 3.1 | lr 6e-4 | norm: 0.33`` or
  ``Epoch [3/50], Train Loss: 1.94, Val Loss: 1.91``.

A line with a loss but no marker (nanoGPT's ``validation loss: 3.07``) belongs
to the next marked line's step: that is where the training loop goes on.

- llm.c's ``main.log``: ``s:<step> trl:<train loss> lr:<lr> norm:<grad norm>``,
  ``s:<step> tel:<val loss>`` and ``s:<step> eval:<HellaSwag accuracy>``;
- lines with a loss and no marker at all (``Training Loss   :  5.45`` once an
  epoch, Markdown or plain text): the n-th line with a training loss is step n;
- the Hugging Face Trainer's printed log, ``{'loss': 0.52, 'learning_rate':
  5e-05, 'epoch': 0.1}`` per logging step, ``{'eval_loss': ...}`` per evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
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
_LLMC_LINE = re.compile(rf"^\s*s:(\d+)((?:\s+[A-Za-z_]+:(?:{_NUM}))+)\s*$", re.IGNORECASE)
_LLMC_PAIR = re.compile(rf"([A-Za-z_]+):({_NUM})", re.IGNORECASE)
_LLMC_NAMES = {"trl": "loss", "tel": "val_loss", "eval": "val_hellaswag", "lr": "lr", "norm": "grad_norm"}
# Lines with a training loss that an unmarked log needs before it is read as one.
_MIN_UNMARKED_LINES = 3
UNRECOGNISED = (
    "no training log pattern recognised (expected lines like 'step 10 | loss 0.52 | lr 1e-3', "
    "'Epoch [1/10], Train Loss: 0.52, Val Loss: 0.61' or nanoGPT's '10 train 0.52')"
)


# A document (README, notes, a list of sources) mentions steps and losses in its tables and lists; only
# its plain lines (a pasted log) can make it a training log.
DOCUMENT_SUFFIXES = {".md", ".markdown", ".rst", ".adoc"}
NOT_A_LOG = "a document, not a training log: no run read from it (pass --format-in text to read it anyway)"
_DOCUMENT_STRUCTURE = re.compile(r"^\s*(?:[|#>]|[-*+]\s|\d+[.)]\s)")
_STRUCTURE_WITHOUT_TABLES = re.compile(r"^\s*(?:[#>]|[-*+]\s|\d+[.)]\s)")
# A Markdown table's |---|---| row or a reStructuredText grid's +---+---+ line: without one, lines that start
# with '|' are no table but a pasted log in that style (PyTorch's word-language-model example prints
# '| epoch   1 |   200/ 2983 batches | lr 20.00 | ... | loss  5.94 | ppl   380.67').
_TABLE_RULE = re.compile(r"^\s*[|+]?\s*:?-{3,}:?\s*(?:[|+]\s*:?-{3,}:?\s*)+[|+]?\s*$")


def plain_lines(lines: list[str]) -> list[str]:
    """The lines of a document that are not headings, table rows, list items or quotes."""
    has_tables = any(_TABLE_RULE.match(line) for line in lines)
    structure = _DOCUMENT_STRUCTURE if has_tables else _STRUCTURE_WITHOUT_TABLES
    return [line for line in lines if not structure.match(line)]


def looks_like_nanogpt(lines: list[str]) -> bool:
    """Most lines are ``<step> <name> <value>``."""
    lines = [line for line in lines if line.strip()]
    hits = sum(1 for line in lines if _NANOGPT_LINE.match(line))
    return bool(lines) and hits >= 0.9 * len(lines)


def looks_like_llmc(lines: list[str]) -> bool:
    """Most lines are llm.c's ``s:<step> trl:<loss> ...``."""
    lines = [line for line in lines if line.strip()]
    hits = sum(1 for line in lines if _LLMC_LINE.match(line))
    return bool(lines) and hits >= 0.9 * len(lines)


def looks_like_key_values(lines: list[str]) -> bool:
    """Some line holds a loss and a step or epoch marker, or comes right after a marker line;
    or, without markers, a few lines hold a training loss."""
    marked = False
    for line in lines:
        has_marker = bool(_MARKER.search(line))
        if (has_marker or marked) and _has_loss(line):
            return True
        marked = has_marker or (marked and not line.strip())
    return sum(1 for line in lines if _has_train_loss(line)) >= _MIN_UNMARKED_LINES


def _has_loss(line: str) -> bool:
    return any("loss" in key.lower() for key, _ in _PAIR.findall(line))


def _has_train_loss(line: str) -> bool:
    return any(frames.default_name(key) == "loss" for key, _ in _PAIR.findall(line))


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
    return _read_line_log(Path(path), mapping, "nanogpt", _nanogpt_row, "'<step> <name> <value>'", _nanogpt_name)


def read_llmc_log(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    return _read_line_log(Path(path), mapping, "llmc", _llmc_row, "'s:<step> <name>:<value> ...'", _llmc_name)


def _nanogpt_row(line: str) -> dict[str, str] | None:
    match = _NANOGPT_LINE.match(line)
    return {"step": match.group(1), match.group(2): match.group(3)} if match else None


def _llmc_row(line: str) -> dict[str, str] | None:
    match = _LLMC_LINE.match(line)
    return {"step": match.group(1), **dict(_LLMC_PAIR.findall(match.group(2)))} if match else None


def _read_line_log(
    path: Path,
    mapping: Mapping[str, str] | None,
    format: str,
    row_of: Callable[[str], dict[str, str] | None],
    shape: str,
    namer: Callable[[str], str],
) -> list[Run]:
    """A log of one fixed line shape: every line that has it is a row, any other line is skipped with a note."""
    warnings = frames.WarningLog()
    rows = []
    for number, line in enumerate(frames.read_text(path).splitlines(), start=1):
        row = row_of(line)
        if row is not None:
            rows.append(row)
        elif line.strip():
            warnings.add("other-line", f"line {number}: not {shape}; ignored")
    if not rows:
        raise InputError(f"{path}: {UNRECOGNISED}")
    return _runs(rows, path, format, mapping, warnings, namer)


def _llmc_name(raw: str) -> str:
    return _LLMC_NAMES.get(raw.lower()) or frames.default_name(raw)


def _nanogpt_name(raw: str) -> str:
    return _NANOGPT_NAMES.get(raw) or frames.default_name(raw)


def read_text_log(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    path = Path(path)
    rows: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []  # losses waiting for the next marked line
    current: dict[str, str] = {}  # a marker on a line of its own ("Epoch 3/10" above Keras' progress line)
    for line in _final_lines(frames.read_text(path)):
        marker = _markers(line)
        values = _line_values(line)
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
        return _unmarked_runs(pending, path, mapping)
    rows.extend(dict(p, step=rows[-1]["step"]) for p in pending)
    return _runs(rows, path, "text", mapping, frames.WarningLog(), frames.default_name)


def _line_values(line: str) -> dict[str, str]:
    """The key-value pairs of one line. A key that comes back after a split's key ("Train Loss: 0.2 Acc:
    0.90 | Val Loss: 0.1 Acc: 0.97") belongs to that split: the second "Acc" is read as "val_Acc", not
    as a second value of the first (which it would overwrite)."""
    values: dict[str, str] = {}
    split = None
    for key, value in _PAIR.findall(line):
        if schema.normalise_key(key) in _MARKER_KEYS:
            continue
        if prefix := schema.split_prefix(key):
            split = prefix
        elif key in values and split:
            key = split + key
        values[key] = value
    return values


def _unmarked_runs(entries: list[dict[str, Any]], path: Path, mapping: Mapping[str, str] | None) -> list[Run]:
    """Loss lines without any step or epoch marker: the n-th line with a training loss is step n,
    a line with only validation values belongs to the latest step."""
    rows = []
    logged = 0
    for entry in entries:
        logged += any(frames.default_name(key) == "loss" for key in entry)
        rows.append({"step": max(logged, 1), **entry})
    if logged == 0:
        raise InputError(f"{path}: {UNRECOGNISED}")
    meta = {"step_from": "count of lines with a training loss (the log has no step or epoch marker)"}
    warnings = frames.WarningLog()
    warnings.add(
        "step-from", "no step or epoch marker in the log: the n-th line with a training loss is read as step n"
    )
    return _runs(rows, path, "text", mapping, warnings, frames.default_name, meta)


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


def _runs(
    rows: list[dict[str, Any]],
    path: Path,
    format: str,
    mapping: Mapping[str, str] | None,
    warnings: frames.WarningLog,
    namer,
    meta: dict[str, Any] | None = None,
) -> list[Run]:
    raw = pd.DataFrame(rows)
    step = raw.pop("step")
    table = frames.rename_columns(raw, path, mapping, namer)
    table.insert(0, "step", step)
    return frames.build_runs(table, path=path, format=format, warnings=warnings, meta=meta)
