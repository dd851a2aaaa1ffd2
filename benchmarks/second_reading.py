"""A second, blind reading of the doubtful labels, from a written criterion applied to every file alike.

The criterion is written in ``sample_runs/corpus/SECOND_READING.md``; this script is that text made exact so
that it reads every file the same way. It uses the parsers of ``corpus_shapes`` (standard library, no diagnose
code) and never runs diagnose, so no rule's verdict can lean on it.

Re-read: every file of both corpora whose first reading carries one of ``REREAD`` (the five doubtful problem
labels, and healthy). The first labels are kept; the second reading is written beside them:
``second_labels`` / ``second_reason`` columns of ``labels.csv`` for the corpus in the repository, and
``sample_runs/corpus/real_runs_second.csv`` for the shared corpus (whose SOURCES.md is not ours to edit).

    python benchmarks/second_reading.py           # print the files whose reading changed, per half
    python benchmarks/second_reading.py --write   # write the second reading
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from corpus_shapes import (  # noqa: E402
    CORPUS,
    EVAL_KEYS,
    TRAIN_KEYS,
    parse,
    pick,
    read_labels,
    shared_first_labels,
    split_of,
    write_labels,
)
from real_corpus import corpus_folder  # noqa: E402

REREAD = ("generalization_gap", "unstable_val", "plateau", "slow_start", "spikes", "healthy")
PROBLEMS = REREAD[:-1]
# Files whose curves are not a plain objective, or hold several runs end to end: the criterion does not apply,
# the first reading stands.
NOT_REREAD = ("special", "multi_run")
DESCRIPTIVE = {"short", "short_eval", "train_to_zero"}
REAL_RUNS_SECOND = CORPUS / "real_runs_second.csv"
Points = list[tuple[float, float]]


def finite(points: Points) -> Points:
    return [(x, v) for x, v in points if v == v and abs(v) != float("inf")]


def centred_median(values: list[float], half: int) -> list[float]:
    return [statistics.median(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]


def train_level(train: Points, evals: Points) -> list[float]:
    """Train loss at each evaluation: the median of the train points since the previous evaluation."""
    levels, previous = [], float("-inf")
    for step, _ in evals:
        since = [v for x, v in train if previous < x <= step]
        if not since:
            since = [min(train, key=lambda p: abs(p[0] - step))[1]]
        levels.append(statistics.median(since))
        previous = step
    return levels


def gap(train: Points, evals: Points) -> str | None:
    """Eval >= 1.5x train over the last quarter of evaluations, and that ratio >= 1.1x its second-quarter value."""
    if len(evals) < 8 or min(v for _, v in train + evals) <= 0:
        return None
    ratios = [e / t for (_, e), t in zip(evals, train_level(train, evals), strict=True)]
    n = len(ratios) // 4
    middle, last = statistics.mean(ratios[n : 2 * n]), statistics.mean(ratios[-n:])
    if last >= 1.5 and last >= 1.1 * middle:
        return f"eval/train {middle:.2f} -> {last:.2f}"
    return ""


def unstable(evals: Points) -> str | None:
    """At least 2 evaluations after the first quarter sit > 20% above their local trend (median of 5 around)."""
    values = [v for _, v in evals]
    if len(values) < 8 or min(values) <= 0:
        return None
    trend = centred_median(values, 2)
    above = [i for i in range(len(values) // 4, len(values)) if values[i] > 1.2 * trend[i]]
    return f"{len(above)} evals >1.2x local trend" if len(above) >= 2 else ""


def smoothed(train: Points) -> list[float]:
    return centred_median([v for _, v in train], max(1, len(train) // 40))


def tenths(values: list[float]) -> list[float]:
    n = len(values)
    return [statistics.mean(values[i * n // 10 : (i + 1) * n // 10]) for i in range(10)]


def plateau(train: Points) -> str | None:
    """Falls > 5%; >= 75% of the fall by 20% of the run; over the last 60% the tenth-means move < 5%."""
    if len(train) < 20:
        return None
    s = smoothed(train)
    parts = tenths([v for _, v in train])
    start, end = s[0], parts[-1]
    fall = start - end
    if start <= 0 or end <= 0:
        return None
    if fall <= 0.05 * start:
        return ""
    early = s[len(s) // 5]
    moved = (max(parts[4:]) - min(parts[4:])) / end
    if start - early >= 0.75 * fall and moved < 0.05:
        return f"{100 * (start - early) / fall:.0f}% of the fall by 20% of the run, last 60% moves {100 * moved:.1f}%"
    return ""


def flat(train: Points) -> str | None:
    """No trend at all: every ten-part mean within 5% of the smoothed start (the plateau criterion's no-fall case)."""
    if len(train) < 20:
        return None
    start = smoothed(train)[0]
    parts = tenths([v for _, v in train])
    if start > 0 and all(abs(p - start) <= 0.05 * start for p in parts):
        return f"ten-part means within 5% of the start {start:.4g}"
    return ""


def slow_start(train: Points) -> str | None:
    """Stays within 5% of its start for the first >= 15% of points, then falls >= 30% of the start."""
    if len(train) < 20:
        return None
    s = smoothed(train)
    if s[0] <= 0:
        return None
    leaves = next((i for i, v in enumerate(s) if v < 0.95 * s[0]), len(s))
    if leaves >= 0.15 * len(s) and min(s[leaves:] or [s[0]]) <= 0.7 * s[0]:
        return f"within 5% of its start for {100 * leaves / len(s):.0f}% of the run, then falls"
    return ""


def spikes(train: Points) -> str | None:
    """A jump (the SOURCES.md definition) that comes back below 1.5x the prior median within 10 points."""
    values = [v for _, v in train]
    if len(values) < 12:
        return None
    spread = max(values) - min(values) if values else 0
    found = 0
    for i in range(10, len(values) - 1):
        median = statistics.median(values[i - 10 : i])
        jump = median > 0 and values[i] > 3 * median and values[i] - median > 0.1 * spread
        if jump and min(values[i + 1 : i + 11]) < 1.5 * median:
            found += 1
    return f"{found} jump(s) that come back down" if found else ""


def eval_series(series: dict[str, Points], train_key: str) -> str | None:
    """The named validation loss with the most points (a one-point test_loss is no curve), else as the shapes."""
    named = [k for k in EVAL_KEYS if k in series and k != train_key]
    return max(named, key=lambda k: len(series[k])) if named else pick(series, EVAL_KEYS, exclude=train_key)


def read_again(path: Path) -> dict[str, str | None] | str:
    """{label: evidence, "" when not met, None when too few points to judge}, or why the file was not re-read."""
    try:
        series = parse(path)
    except (ValueError, UnicodeError) as exc:
        return f"unparsable here ({exc})"
    train_key = pick(series, TRAIN_KEYS)
    if train_key is None:
        return "no train loss parsed"
    train = finite(series[train_key])
    eval_key = eval_series(series, train_key)
    evals = finite(series.get(eval_key, [])) if eval_key else []
    if len(train) < 2:
        return "no train loss parsed"
    found = {"plateau": plateau(train), "flat": flat(train), "slow_start": slow_start(train), "spikes": spikes(train)}
    found |= {"generalization_gap": gap(train, evals), "unstable_val": unstable(evals)} if evals else {}
    return found


def second(first: set[str], path: Path) -> tuple[set[str], str]:
    """(second-reading labels, reason when they differ from the first)."""
    if not first & set(REREAD):
        return first, ""
    if first & set(NOT_REREAD):
        return first, ""
    found = read_again(path)
    if isinstance(found, str):
        return first, ""
    # a label whose criterion cannot be judged (too few points, no eval series) keeps its first reading
    labels = (first - set(REREAD)) | {x for x in PROBLEMS if found.get(x) or (found.get(x) is None and x in first)}
    labels |= {"flat"} if found.get("flat") else set()  # added where it holds, never taken away
    judged = {x for x in (*PROBLEMS, "flat") if found.get(x)}
    # Healthy stays healthy (and a problem file becomes healthy) when the five criteria find nothing and no
    # other problem label was given; a healthy file that also carried another label keeps both, as first read.
    if not judged and ("healthy" in first or not labels - DESCRIPTIVE):
        labels |= {"healthy"}
    if labels == first:
        return labels, ""
    dropped, added = sorted(first - labels), sorted(labels - first)
    reason = "; ".join(
        [f"+{label}: {found[label]}" for label in added if label in found]
        + [f"-{label}: criterion not met" for label in dropped if label != "healthy"]
    )
    return labels, reason or "problem labels changed"


def real_runs_rows() -> list[dict[str, str]]:
    shared = corpus_folder()
    if shared is None:
        return []
    rows = []
    for name, labels in shared_first_labels(shared):
        labels2, reason = second(labels, shared / name)
        rows.append(
            {
                "file": name,
                "labels": ";".join(sorted(labels)),
                "second_labels": ";".join(sorted(labels2)),
                "second_reason": reason,
            }
        )
    return rows


def label_changes(first: set[str], second: set[str]) -> list[str]:
    """'+label' for each label the second reading added, '-label' for each it took away."""
    return [f"+{x}" for x in sorted(second - first)] + [f"-{x}" for x in sorted(first - second)]


def changes(rows: list[tuple[str, set[str], set[str]]]) -> dict[str, Counter]:
    """Per half: Counter of '+label' / '-label' changes of the second reading."""
    out: dict[str, Counter] = {"calibration": Counter(), "heldout": Counter()}
    for split, first, labels in rows:
        out[split].update(label_changes(first, labels))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the second reading beside the first")
    args = parser.parse_args(argv)
    corpus = read_labels()
    summary = []
    for row in corpus:
        first = set(row["labels"].split(";"))
        labels, reason = second(first, CORPUS / row["file"])
        row["second_labels"], row["second_reason"] = ";".join(sorted(labels)), reason
        summary.append((row["split"], first, labels))
        if reason and row["split"] == "calibration":
            print(f"corpus/{row['file']}: {row['labels']} -> {row['second_labels']} ({reason})")
    shared = real_runs_rows()
    for row in shared:
        split = split_of(row["file"])
        summary.append((split, set(row["labels"].split(";")), set(row["second_labels"].split(";"))))
        if row["second_reason"] and split == "calibration":
            print(f"real_runs/{row['file']}: {row['labels']} -> {row['second_labels']} ({row['second_reason']})")
    for split, counter in changes(summary).items():
        print(f"{split}: " + (", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "no change"))
    if args.write:
        write_labels(corpus)
        with REAL_RUNS_SECOND.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(shared[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
