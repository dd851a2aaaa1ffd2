"""Choose a reader for a path (by content, then by name) and read it into `Run` objects."""

from __future__ import annotations

import json
import os
import re
import sys
import warnings as _warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from diagnose.errors import InputError
from diagnose.readers import frames, hf, native, ranks, tables, text
from diagnose.run import Run
from diagnose.runfile import schema

Reader = Callable[..., list[Run]]

_SNIFF_BYTES = 64 * 1024
_TFEVENTS = "events.out.tfevents"
# Text files a folder may hold as logs; other suffixes (.py, .md, ...) are not read from folders.
_LOG_SUFFIXES = {".log", ".txt", ".out", ""}
# When the content says nothing clear, the name decides (the reader then says what is wrong).
_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".log": "text", ".txt": "text"}
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_JSON_RECORDS = re.compile(r"^\s*\[\s*\{")
_METRIC_KEY = re.compile(r'\{[^{}]*"(step|global_step|iteration|epoch|[^"]*loss)"\s*:', re.IGNORECASE)
_JSON_HISTORY = re.compile(r'^\s*\{\s*"[^"]+"\s*:\s*\[')
_NOT_RECOGNISED = (
    "not a training log diagnose can read (expected a run file of JSON lines, a trainer_state.json, "
    "a metrics CSV, a Keras history.json, TensorBoard event files, or a text log with lines like "
    "'step 10 | loss 0.52' or 'Epoch [1/10], Train Loss: 0.52')"
)


def _read_keras(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    first = frames.read_bytes(Path(path)).lstrip()[:1]
    reader = tables.read_keras_history if first in (b"{", b'"') else tables.read_keras_csv
    return reader(path, mapping=mapping)


def _read_tensorboard(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    from diagnose.readers import tensorboard  # needs the optional tensorboard package

    return tensorboard.read_tensorboard(path, mapping=mapping)


READERS: dict[str, Reader] = {
    "diagnose": native.read_jsonl,
    "jsonl": native.read_jsonl,
    "huggingface": hf.read_trainer_state,
    "lightning": tables.read_lightning_csv,
    "keras": _read_keras,
    "yolo": tables.read_yolo_results,
    "csv": tables.read_generic_csv,
    "json": tables.read_json_records,
    "nanogpt": text.read_nanogpt_log,
    "llmc": text.read_llmc_log,
    "text": text.read_text_log,
    "trainer_stdout": text.read_trainer_stdout,
    "tensorboard": _read_tensorboard,
}
ALIASES = {
    "hf": "huggingface",
    "transformers": "huggingface",
    "trainer_state": "huggingface",
    "pytorch_lightning": "lightning",
    "ultralytics": "yolo",
    "tb": "tensorboard",
    "txt": "text",
    "log": "text",
    "native": "diagnose",
    "llm.c": "llmc",
}
FORMATS = tuple(READERS)


def load_all(path: str | Path, *, format: str | None = None, mapping: Mapping[str, str] | None = None) -> list[Run]:
    """Every run held by ``path``.

    A file may hold several runs appended one after another (the step counter
    restarts): each is its own `Run`. A folder stands for every run file found
    in it and below it; a folder of TensorBoard event files is one run.
    ``format`` forces a reader (one of `FORMATS`); ``mapping`` says which
    column is which (``{"loss": "train/loss", "step": "iteration"}``).
    """
    path = Path(path)
    try:
        return _load_path(path, format, mapping)
    except OSError as exc:  # the path itself cannot be looked at (permissions, a name too long, ...)
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _load_path(path: Path, format: str | None, mapping: Mapping[str, str] | None) -> list[Run]:
    rank_sets = ranks.rank_sets(path) if format is None else []
    if rank_sets:  # the per-rank files of a torch.distributed run: one run with a rank dimension
        return [ranks.read_rank_set(files, mapping=mapping) for files in rank_sets]
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir() and not _has_tfevents(path) and _canonical(format) != "tensorboard":
        return _load_folder(path, format, mapping)
    if not path.is_dir() and not path.is_file():
        raise InputError(f"{path}: {frames.NOT_REGULAR}")
    if format is not None:
        return _reader(format, path)(path, mapping=mapping)
    found = detect(path) or _BY_SUFFIX.get(path.suffix.lower())
    if found is None:
        frames.read_bytes(path)  # an empty or unreadable file says so first
        if path.suffix.lower() in text.DOCUMENT_SUFFIXES:
            raise InputError(f"{path}: {text.NOT_A_LOG}")
        raise InputError(f"{path}: {_NOT_RECOGNISED}")
    return READERS[found](path, mapping=mapping)


def load(
    path: str | Path, *, format: str | None = None, mapping: Mapping[str, str] | None = None, index: int = -1
) -> Run:
    """Read one run. When the path holds several, take ``index`` (default: the last) and warn."""
    runs = load_all(path, format=format, mapping=mapping)
    if len(runs) > 1:
        _warnings.warn(
            f"{Path(path).name} holds {len(runs)} runs; using run {index % len(runs) + 1} "
            "(pass index= or use diagnose.load_all)",
            stacklevel=2,
        )
    return runs[index]


def _canonical(format: str | None) -> str | None:
    return None if format is None else ALIASES.get(format.lower(), format.lower())


def _reader(format: str, path: Path) -> Reader:
    name = _canonical(format)
    if name not in READERS:
        raise InputError(f"{path}: unknown input format {format!r} (known: {', '.join(FORMATS)})")
    return READERS[name]


# -- folders ---------------------------------------------------------------------


def _load_folder(folder: Path, format: str | None, mapping: Mapping[str, str] | None) -> list[Run]:
    sources, notes = folder_sources(folder)
    read = [read_source(folder, source, found, format, mapping) for source, found in sources]
    return gather_folder(folder, read, notes, lambda run: run)


def folder_sources(folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """The run files of a folder that `load_all` reads one by one (with their readers), and notes
    (among them what could not be read: a sub-folder without permission, a pipe, a device)."""
    skipped: list[str] = []
    sources, notes = _latest_checkpoints(_folder_sources(folder, skipped))
    return sources, notes + skipped


def is_plain_folder(path: Path, format: str | None = None) -> bool:
    """True when `load_all` reads ``path`` as a folder of separate run files."""
    return (
        path.is_dir()
        and not _has_tfevents(path)
        and _canonical(format) != "tensorboard"
        and not (format is None and ranks.rank_sets(path))
    )


def read_source(
    folder: Path, source: Path, found: str, format: str | None = None, mapping: Mapping[str, str] | None = None
) -> tuple[list[Run], str | None]:
    """The runs of one file of a folder, or why it was skipped."""
    reader = READERS[found] if format is None else _reader(format, source)
    try:
        return reader(source, mapping=mapping), None
    except InputError as exc:
        return [], f"skipped {source.relative_to(folder)}: {exc}"


def gather_folder(
    folder: Path, read: list[tuple[list[Any], str | None]], notes: list[str], run_of: Callable[[Any], Run]
) -> list[Any]:
    """What the files of a folder gave (runs, or anything holding one), in file order; the files that
    failed are named on the first run, and a folder where none could be read is an error."""
    found = [item for items, _ in read for item in items]
    failed = [failure for _, failure in read if failure is not None]
    if not found:
        detail = f" ({failed[0]})" if failed else ""
        raise InputError(f"{folder}: no run files found in this folder{detail}")
    run_of(found[0]).warnings.extend(notes + failed)
    return found


def _folder_sources(folder: Path, skipped: list[str]) -> list[tuple[Path, str]]:
    """Recognised run files under ``folder`` in name order; a folder of event files counts once.

    What cannot be read (a sub-folder without permission, a pipe, a device) is named in ``skipped``."""
    sources = []

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename).relative_to(folder) if exc.filename else folder
        skipped.append(f"skipped {where}: cannot read ({exc.strerror})")

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(root)
        if any(f.startswith(_TFEVENTS) for f in files):
            sources.append((here, "tensorboard"))
        for name in sorted(files):
            path = here / name
            if name.startswith((".", _TFEVENTS)):
                continue
            if not path.is_file():
                skipped.append(f"skipped {path.relative_to(folder)}: {frames.NOT_REGULAR}")
                continue
            found = detect(path, strict=True)
            if found is not None:
                sources.append((path, found))
    return sources


def _latest_checkpoints(sources: list[tuple[Path, str]]) -> tuple[list[tuple[Path, str]], list[str]]:
    """One trainer_state.json per training output folder.

    Every ``checkpoint-N/trainer_state.json`` holds the history up to N, so
    the output folder's own file (written at the end), else the latest
    checkpoint's, stands for the run; the others would repeat it.
    """
    chosen: dict[Path, tuple[int, Path]] = {}
    for path, _ in sources:
        if path.name == "trainer_state.json":
            match = _CHECKPOINT.fullmatch(path.parent.name)
            root, rank = (path.parent.parent, int(match[1])) if match else (path.parent, sys.maxsize)
            if root not in chosen or rank > chosen[root][0]:
                chosen[root] = (rank, path)
    keep = {path for _, path in chosen.values()}
    kept = [(p, f) for p, f in sources if p.name != "trainer_state.json" or p in keep]
    notes = (
        [
            f"{len(sources) - len(kept)} earlier checkpoint trainer_state.json file(s) skipped: the latest one "
            "holds their history"
        ]
        if len(kept) < len(sources)
        else []
    )
    return kept, notes


def _has_tfevents(folder: Path) -> bool:
    return any(p.name.startswith(_TFEVENTS) for p in folder.iterdir())


# -- detection -------------------------------------------------------------------


def detect(path: str | Path, *, strict: bool = False) -> str | None:
    """The reader for ``path`` by its content (and name), or None.

    ``strict`` (used for folders) reads text logs only from files named like
    logs (``.log``, ``.txt``, ``.out``), so that a README is never taken for one.
    """
    path = Path(path)
    if path.is_dir():
        return "tensorboard" if _has_tfevents(path) else None
    if path.name.startswith(_TFEVENTS):
        return "tensorboard"
    if not path.is_file():  # never open a pipe or a device: the read could block forever
        return None
    try:
        with open(path, "rb") as fh:
            head = frames.as_utf8(fh.read(_SNIFF_BYTES))
    except OSError:
        return None
    if b"\x00" in head or not head.strip():
        return None
    sample = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = sample.splitlines()[:-1] if len(head) == _SNIFF_BYTES else sample.splitlines()
    if path.name == "trainer_state.json":
        return "huggingface"
    if tables.PYTHON_HISTORY.match(sample):
        return "keras"
    found = _detect_json(sample, lines) if sample.lstrip()[:1] in ("{", "[") else _detect_table(lines)
    if found is not None:
        return found
    if strict and path.suffix.lower() not in _LOG_SUFFIXES:
        return None
    if path.suffix.lower() in text.DOCUMENT_SUFFIXES:
        lines = text.plain_lines(lines)
    if text.looks_like_nanogpt(lines):
        return "nanogpt"
    if text.looks_like_llmc(lines):
        return "llmc"
    if text.looks_like_key_values(lines):
        return "text"
    if text.looks_like_trainer_stdout(lines):
        return "trainer_stdout"
    return None


def _detect_json(sample: str, lines: list[str]) -> str | None:
    first = next((line for line in lines if line.strip()), "")
    try:
        record = json.loads(first, parse_constant=str)
    except (ValueError, RecursionError):
        record = None
    if isinstance(record, list) or (record is None and _JSON_RECORDS.match(sample)):
        return "json" if _METRIC_KEY.search(sample) else None
    if isinstance(record, dict):
        if "log_history" in record:
            return "huggingface"
        if _is_history(record):
            return "keras"
        return "jsonl" if _is_metric_record(record) else None
    if '"log_history"' in sample:
        return "huggingface"
    if _JSON_HISTORY.match(sample):
        return "keras"
    try:  # a pretty-printed history whose first key is not a series ({"params": {...}, "loss": [...]})
        whole = json.loads(sample, parse_constant=str)
    except ValueError:
        return None
    return "keras" if isinstance(whole, dict) and _is_history(whole) else None


def _is_history(record: dict) -> bool:
    """A Keras-style history: metric lists under names, a loss among them; other keys may sit beside them."""
    series = [str(k) for k in tables.history_series(record)]
    return bool(series) and (len(series) == len(record) or any("loss" in k.lower() for k in series))


def _is_metric_record(record: dict) -> bool:
    """A native record, or a minimal one: a step, or something named like a loss."""
    if record.get("kind") in schema.KINDS:
        return True
    keys = [schema.normalise_key(str(k)) for k in record]
    return any(k in frames.STEP_COLUMNS or "loss" in k for k in keys)


def _epoch_repeats(lines: list[str], column: int) -> bool:
    """Two consecutive data rows with the same epoch (Keras writes one row an epoch; appended runs restart)."""
    previous = None
    for line in [line for line in lines if line.strip()][1:]:
        cells = line.split(",")
        value = schema.to_number(cells[column]) if column < len(cells) else None
        if value is not None and value == previous:
            return True
        previous = value
    return False


def _is_ultralytics(header: list[str]) -> bool:
    """Ultralytics' column groups: ``train/box_loss`` (detection) or ``train/loss`` beside
    ``metrics/accuracy_top1`` (classification)."""
    lowered = [h.lower() for h in header]
    groups = {h.partition("/")[0] for h in lowered if "/" in h}
    return any(h.endswith("/box_loss") for h in lowered) or {"train", "metrics"} <= groups


def _detect_table(lines: list[str]) -> str | None:
    """A CSV whose first data row is mostly numbers, and which has a step or a loss column."""
    lines = lines[tables.preamble_lines(lines) :]  # a trainer's '# configuration' lines above the header
    rows = [line for line in lines if line.strip()][:2]
    if len(rows) < 2:
        return None
    header = [h.strip() for h in rows[0].split(",")]
    cells = [c.strip() for c in rows[1].split(",")]
    if len(header) < 2 or len(cells) != len(header):
        return None
    numeric = sum(1 for c in cells if c == "" or schema.to_number(c) is not None)
    if numeric < max(1, len(cells) / 2):
        return None
    norms = [schema.normalise_key(h) for h in header]
    has_loss = any("loss" in n for n in norms)
    if "epoch" in norms and _is_ultralytics(header):
        return "yolo"
    if "step" in norms and "epoch" in norms:
        return "lightning"
    if "epoch" in norms and _epoch_repeats(lines, norms.index("epoch")):
        return "lightning"  # an early Lightning metrics.csv: no step column, a row per logging call
    if has_loss and ("epoch" in norms or not set(norms) & set(frames.STEP_COLUMNS)):
        return "keras"
    if has_loss or set(norms) & set(frames.STEP_COLUMNS):
        return "csv"
    return None
