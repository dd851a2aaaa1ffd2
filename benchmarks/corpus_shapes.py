"""Describe the shape of each corpus file from its own numbers, without diagnose.

The labels in ``sample_runs/corpus/labels.csv`` are decided from these
descriptions (and a look at the numbers) before diagnose ever reads a file, so
this script parses every format itself with the standard library and shares no
code with the readers it is meant to check. The definitions follow
``shared/real_runs/SOURCES.md`` (first/last quarter, jumps, chance levels,
eval rises); they are repeated in ``sample_runs/corpus/SOURCES.md``.

    python benchmarks/corpus_shapes.py FILE...          # one description per file
    python benchmarks/corpus_shapes.py --write-sources  # rebuild SOURCES.md and the split column of labels.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "sample_runs" / "corpus"
LABELS = CORPUS / "labels.csv"
LABEL_COLUMNS = [
    "file",
    "repository",
    "path",
    "commit",
    "format",
    "labels",
    "split",
    "notes",
    "second_labels",
    "second_reason",
]

# Chance-level cross-entropy ln K for the class counts people train on most.
CHANCE_CLASSES = (2, 3, 4, 5, 6, 7, 8, 10, 100, 1000)
TRAIN_KEYS = (
    "loss",
    "train_loss_step",
    "train_loss",
    "train_loss_epoch",
    "train/loss",
    "train/box_loss",
    "trl",
    "training_loss",
    "train_losses",
    "train_mean_nll",
)
EVAL_KEYS = (
    "eval_loss",
    "val_loss",
    "val_loss_epoch",
    "validation_loss",
    "val/loss",
    "val/box_loss",
    "test_loss",
    "valid_loss",
    "val_losses",
)
Series = dict[str, list[tuple[float, float]]]


def split_of(relative: str) -> str:
    """The once-only random split: the first sha256 byte of the path, even -> calibration."""
    return "calibration" if hashlib.sha256(relative.encode("utf-8")).digest()[0] % 2 == 0 else "heldout"


def number(text: str) -> float | None:
    try:
        return float(text.strip().strip('"'))
    except (TypeError, ValueError):
        return None


# -- parsing, one function per format -------------------------------------------


def parse_trainer_state(text: str) -> Series:
    found: Series = {}
    for i, entry in enumerate(json.loads(text).get("log_history", [])):
        x = entry.get("step", i)
        for key, value in entry.items():
            numeric = key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool)
            spelled = isinstance(value, str) and number(value) is not None  # "NaN", "Infinity" written as text
            if numeric or spelled:
                found.setdefault(key, []).append((x, float(value)))
    # Trainer's closing summary (train_loss averaged over the run) is one point, not a series.
    return {k: v for k, v in found.items() if not (k == "train_loss" and len(v) == 1)}


def parse_csv(text: str, x_column: str | None = None) -> Series:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return {}
    header = [h.strip() for h in rows[0]]
    x_index = next((header.index(c) for c in (x_column, "step", "epoch", "Epoch") if c in header), None)
    found: Series = {}
    for i, row in enumerate(rows[1:]):
        x = number(row[x_index]) if x_index is not None and x_index < len(row) else None
        for j, cell in enumerate(row):
            value = number(cell)
            if j != x_index and j < len(header) and value is not None:
                found.setdefault(header[j], []).append((i if x is None else x, value))
    return found


def parse_history_json(text: str) -> Series:
    data = json.loads(text)
    found: Series = {}
    if not isinstance(data, dict):  # a history saved as a JSON string or list holds no named series
        return found
    for key, values in data.items():
        if isinstance(values, list):
            points = [(i, float(v)) for i, v in enumerate(values) if isinstance(v, (int, float))]
            if points:
                found[key] = points
    return found


def parse_jsonl(text: str) -> Series:
    found: Series = {}
    for i, line in enumerate(text.splitlines()):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            x = entry.get("step", entry.get("iter", entry.get("epoch", i)))
            for key, value in entry.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "iter"):
                    found.setdefault(key, []).append((x, float(value)))
    return found


_NANOGPT = re.compile(r"^(\d+)\s+(train|val|hella)\s+(\S+)\s*$")
_STEP = re.compile(r"\b(?:step|iter|iteration|epoch|s)\s*[:=]?\s*\[?(\d+)", re.IGNORECASE)


def parse_text(text: str) -> Series:
    lines = text.splitlines()
    if sum(bool(_NANOGPT.match(line)) for line in lines) > len(lines) / 2:
        found: Series = {}
        for line in lines:
            match = _NANOGPT.match(line)
            if match:
                found.setdefault(f"{match[2]}_loss", []).append((int(match[1]), float(match[3])))
        return found
    found = {}
    for i, line in enumerate(lines):
        step = _STEP.search(line)
        x = int(step[1]) if step else i
        for name, value in re.findall(
            r"([A-Za-z][A-Za-z_/ ]*?(?:loss|Loss|LOSS|nll|acc|Acc|trl|tel))\s*[:=]?\s*"
            r"(-?\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)",
            line,
        ):
            key = re.sub(r"\s+", "_", name.strip().lower())
            found.setdefault(key, []).append((x, float(value)))
    return found


def parse(path: Path) -> Series:
    text = path.read_text(encoding="utf-8", errors="replace")
    folder = path.parent.name
    if folder == "hf_trainer_state":
        return parse_trainer_state(text)
    if folder == "keras_history_json":
        return parse_history_json(text)
    if folder == "jsonl":
        return parse_jsonl(text)
    if folder in ("lightning_csv", "keras_csv", "yolo_results_csv", "csv"):
        return parse_csv(text)
    return parse_text(text)


# -- shape ------------------------------------------------------------------------


def pick(series: Series, keys: tuple[str, ...], exclude: str | None = None) -> str | None:
    for key in keys:
        if key in series and key != exclude:
            return key
    lossy = [k for k in series if "loss" in k.lower() and k != exclude]
    return lossy[0] if lossy else None


def g(value: float) -> str:
    return f"{value:.4g}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.2e}"


def at(step: float) -> str:
    return str(int(step)) if float(step).is_integer() else g(step)


def quarters(values: list[float]) -> tuple[float, float]:
    n = max(1, len(values) // 4)
    return sum(values[:n]) / n, sum(values[-n:]) / n


def jumps(points: list[tuple[float, float]]) -> list[str]:
    values = [v for _, v in points]
    spread = max(values) - min(values)
    found = []
    for i in range(10, len(points)):
        window = sorted(values[i - 10 : i])
        median = (window[4] + window[5]) / 2
        if values[i] > 3 * median and values[i] - median > 0.1 * spread and median > 0:
            found.append(f"step {at(points[i][0])}: {g(values[i])} vs median {g(median)}")
    return found


def chance(values: list[float]) -> str | None:
    tail = values[-max(1, len(values) // 4) :]
    mean = sum(tail) / len(tail)
    std = (sum((v - mean) ** 2 for v in tail) / len(tail)) ** 0.5
    for k in CHANCE_CLASSES:
        if abs(mean - math.log(k)) < 0.03 * math.log(k) and std < 0.05:
            return f"ln{k} ({math.log(k):.3f})"
    return None


def describe_series(name: str, points: list[tuple[float, float]]) -> str:
    finite = [(x, v) for x, v in points if math.isfinite(v)]
    bad = len(points) - len(finite)
    if not finite:
        return f"{name}: {len(points)} points, none finite"
    values = [v for _, v in finite]
    first, last = quarters(values)
    trend = "falls" if last < 0.9 * first else "rises" if last > 1.1 * first else "stays flat"
    if min(values) < 0:
        trend = "moves"
    low = min(range(len(values)), key=values.__getitem__)
    text = (
        f"{name} {trend} {g(values[0])} -> {g(values[-1])} (min {g(values[low])} at step {at(finite[low][0])}, "
        f"max {g(max(values))}; last-quarter mean {g(last)} vs first-quarter {g(first)})"
    )
    if bad:
        first_bad = next(x for x, v in points if not math.isfinite(v))
        text += f"; {bad} non-finite value(s), first at step {at(first_bad)}"
    spikes = jumps(finite)
    if spikes:
        text += f"; {len(spikes)} jump(s) >3x rolling median and >10% of range ({', '.join(spikes[:3])})"
    sits = chance(values)
    if sits:
        text += f"; sits at {sits}"
    if any(v == 0.0 for v in values):
        text += f"; exactly 0.0 at {sum(v == 0.0 for v in values)} point(s)"
    return text


def eval_rise(train: list[tuple[float, float]], evals: list[tuple[float, float]]) -> str:
    values = [v for _, v in evals if math.isfinite(v)]
    if len(values) < 3:
        return ""
    low = min(range(len(values)), key=values.__getitem__)
    if low < 0.85 * len(values) and values[-1] > 1.1 * values[low]:
        train_values = [v for _, v in train if math.isfinite(v)]
        falling = bool(train_values) and quarters(train_values)[1] < 0.9 * quarters(train_values)[0]
        return f", then rises: ends {values[-1] / values[low]:.2f}x its min" + (
            " while train keeps falling" if falling else ""
        )
    return ""


def shape(path: Path) -> tuple[str, str]:
    """(points 'train / eval', description) of one file."""
    try:
        series = parse(path)
    except (ValueError, UnicodeError) as exc:
        return "0 / 0", f"unparsable here: {exc}"
    train_key = pick(series, TRAIN_KEYS)
    eval_key = pick(series, EVAL_KEYS, exclude=train_key)
    if train_key is None:
        keys = ", ".join(sorted(series)[:8]) or "none"
        return "0 / 0", f"no loss-like series (numeric keys: {keys})"
    train = series[train_key]
    parts = [describe_series(train_key, train)]
    evals = series.get(eval_key, []) if eval_key else []
    if evals:
        parts.append(describe_series(eval_key, evals) + eval_rise(train, evals))
    for extra in ("learning_rate", "lr", "grad_norm", "norm"):
        values = [v for _, v in series.get(extra, [])]
        if values:
            bad = sum(not math.isfinite(v) for v in values)
            finite = [v for v in values if math.isfinite(v)] or [float("nan")]
            parts.append(
                f"{extra} {g(finite[0])} -> {g(finite[-1])} (max {g(max(finite))})"
                + (f", {bad} non-finite" if bad else "")
            )
    if len(train) < 20:
        parts.append("SHORT (<20 points)")
    return f"{len(train)} / {len(evals)}", "; ".join(parts)


# A row of shared/real_runs/SOURCES.md's tables: the file, and after its point counts, its labels.
_SHARED_ROW = re.compile(r"^\| `([^`]+)` \|.*\| \d+ / \d+ \| ([^|]+) \|")


def shared_first_labels(shared: Path) -> Iterator[tuple[str, set[str]]]:
    """(file, labels) of the shared corpus, parsed from its SOURCES.md tables (the first reading)."""
    for line in (shared / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        match = _SHARED_ROW.match(line)
        if match:
            yield match[1], {label.strip() for label in match[2].split(",")}


# -- SOURCES.md ---------------------------------------------------------------------


def read_labels() -> list[dict[str, str]]:
    with LABELS.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_labels(rows: list[dict[str, str]]) -> None:
    with LABELS.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["file"]))


HEADER = """# Calibration corpus of real training logs: sources

Every file under this folder is a verbatim copy of a training log that a public GitHub repository holds at the
commit given (taken through the search index's file reader, written byte for byte; only the file name changes).
None of these repositories is in `shared/corpus-reserved.txt`. `labels.csv` is the machine-readable form of this
table (labels separated by `;`).

**How exact a copy is.** The index gives a file's text and its character count, not its bytes: every copy has
that count. Line endings the text does not show (CR LF, CR CR LF) were restored from the count, and each such
file's note says so. Some files, in the batches added since the corpus reached 318 files, were written out by a
short script from the values read (same text, same count) rather than pasted; neither way can catch a swapped
digit of the same length. The 19 files added when the corpus went from 411 to 430 files were written from a
snapshot of their repository at the recorded commit (`git show <commit>:<path>`, the file's own bytes) and kept
only where their character count equals the index's.

**Labels come from the numbers, before diagnose reads the file.** The *shape* column is computed by
`benchmarks/corpus_shapes.py` (standard library only, no diagnose code); the labels are my reading of that
shape and of the numbers themselves, in the vocabulary of `shared/real_runs/SOURCES.md`: healthy; overfitting
(eval bottoms out and rises while train falls); eval_rising (eval rises, train not falling);
generalization_gap (train and eval apart and widening); unstable_val; stuck_at_chance (sits at ln K);
plateau (fast early drop, then flat for most of the run); flat (no trend at all); slow_start; spikes; nan
(non-finite loss or eval metric); nonfinite_grad_norm; diverging; lr_too_high (only where the stored LR is
extreme); zero_loss / train_to_zero; special (the loss is not a plain objective: GAN, RL, policy gradient);
multi_run; short (<20 points); short_eval. Labels are heuristic readings, not the authors' ground truth.
The scores and tests use these labels (the first reading). The doubtful labels were also read a second time,
mechanically, against a written criterion (`SECOND_READING.md`, the `second_labels` column of `labels.csv`): a
check of label consistency, not scoring labels, because its criteria are close to some rules' statistics.

Definitions used by the shape script: *first/last-quarter mean* of the finite points; *falls* = last quarter
< 0.9x first, *rises* > 1.1x; *jump* = a point > 3x the median of the previous 10 and more than 10% of the
series' range above it; *sits at lnK* = last-quarter mean within 3% of ln K (K in {CLASSES}) with std < 0.05;
*then rises* = eval minimum in the first 85% of the evaluations and the last eval > 1.1x that minimum.

**Split.** Each file's half is decided once, by the first byte of sha256 of its path relative to the corpus
folder (even: calibration, odd: heldout); the files of `shared/real_runs` get theirs the same way from their
path under `real_runs/`. Rules are tuned on the calibration half only; the held-out figures are the ones to
report (`make corpus-score`).
"""


def write_sources() -> None:
    rows = read_labels()
    for row in rows:
        row["split"] = split_of(row["file"])
        row["format"] = row["file"].split("/", 1)[0]
    write_labels(rows)
    formats = Counter(r["format"] for r in rows)
    labels = Counter(label for r in rows for label in r["labels"].split(";"))
    out = [HEADER.replace("{CLASSES}", ", ".join(map(str, CHANCE_CLASSES))), "## Totals", ""]
    out.append(
        f"{len(rows)} files from {len({r['repository'] for r in rows})} repositories; "
        f"{sum(1 for r in rows if r['split'] == 'calibration')} calibration, "
        f"{sum(1 for r in rows if r['split'] == 'heldout')} held-out."
    )
    out += ["", "| format | files |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(formats.items())]
    out += ["", "| label | files |", "|---|---|"] + [f"| {k} | {v} |" for k, v in labels.most_common()]
    for fmt in sorted(formats):
        out += [
            "",
            f"## {fmt}",
            "",
            "| file | repository | path in repository | commit | points (train / eval) | labels | split | "
            "shape (computed) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in (r for r in rows if r["format"] == fmt):
            points, text = shape(CORPUS / row["file"])
            note = f" **Note:** {row['notes']}" if row["notes"] else ""
            cells = [
                f"`{row['file']}`",
                row["repository"],
                f"`{row['path']}`",
                f"`{row['commit']}`",
                points,
                ", ".join(row["labels"].split(";")),
                row["split"],
                (text + "." + note).replace("|", "/"),
            ]
            out.append("| " + " | ".join(cells) + " |")
    (CORPUS / "SOURCES.md").write_text("\n".join(out) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--write-sources", action="store_true", help="rebuild SOURCES.md and labels.csv's split")
    args = parser.parse_args(argv)
    for path in args.files:
        points, text = shape(path)
        print(f"{path}: [{points}] {text}")
    if args.write_sources:
        write_sources()
    return 0


if __name__ == "__main__":
    sys.exit(main())
