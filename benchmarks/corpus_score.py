"""Score the rules against the labelled real-log corpora, calibration and held-out halves apart.

Two corpora are read: ``sample_runs/corpus`` (labels in its ``labels.csv``) and
``shared/real_runs`` beside the checkout (labels parsed from its SOURCES.md
tables). Every file has a split fixed once by a hash of its path (see
``corpus_shapes.split_of``): tune thresholds on the calibration half, report
the held-out half.

Printed per half: recall per problem label (a label counts as found when a
file gets, at warning or error, one of the rule codes that ``FOUND_BY`` lists
for it), false alarms (any warning or error on a file labelled healthy), read
failures (a clear refusal and a crash are told apart), and files whose
verdict is "healthy" although no training loss was read. The scores use the first reading of
the labels (``labels.csv``'s ``labels``, the shared SOURCES.md tables): it was decided from the
numbers before any rule ran. The second reading (``sample_runs/corpus/SECOND_READING.md``) is a
mechanical check of the doubtful labels' consistency whose criteria are close to some rules'
statistics, so scoring rules against it would be circular; ``--reading second`` scores it anyway,
and each half says how often the two readings agree. Missed and alarmed
files are named for the calibration half only, so the held-out half is not
tuned to by name (``--name-heldout`` names them too).

    python benchmarks/corpus_score.py [--json] [--name-heldout] [--split calibration|heldout] [--reading second]
                                      [--as-of COMMIT]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from corpus_shapes import CORPUS, read_labels, shared_first_labels, split_of  # noqa: E402
from real_corpus import corpus_folder  # noqa: E402
from second_reading import REAL_RUNS_SECOND, label_changes  # noqa: E402

import diagnose  # noqa: E402
from diagnose.errors import InputError  # noqa: E402
from diagnose.report import summary  # noqa: E402

# The one place that says which rule codes find which labelled problem. A label
# absent here is descriptive (healthy, short, multi_run, special, ...) and is
# not scored for recall. Rules added later join the lists of the labels they find.
FOUND_BY: dict[str, tuple[str, ...]] = {
    "overfitting": ("OVF001", "OVF002", "OVF009"),
    "eval_rising": ("OVF001", "OVF002", "OVF004"),
    "generalization_gap": ("OVF001", "OVF002", "OVF006", "OVF009"),
    "unstable_val": ("OVF001", "OVF003", "OVF008", "SPK001", "LR002"),
    "stuck_at_chance": ("CH001", "CH002", "CH003"),
    "plateau": ("PLT001", "LR003"),
    "flat": ("PLT001", "PLT002", "LR003", "CH001"),
    "slow_start": ("PLT001", "CH001", "CH004", "INIT001"),
    "spikes": ("SPK001", "LR002", "OVF003"),  # OVF003: a spike of the validation loss
    "nan": ("NF001", "NF002", "NF003"),
    "nonfinite_grad_norm": ("NF001",),
    "diverging": ("LR001", "LR002", "GRD001", "NF001", "NF003"),
    "lr_too_high": ("LR001", "LR002", "NOI001"),
    "zero_loss": ("ZL001",),
}
# Labels that describe a file without naming a problem a rule should find.
DESCRIPTIVE = frozenset({"healthy", "short", "short_eval", "multi_run", "special", "train_to_zero"})
LABELS = DESCRIPTIVE | set(FOUND_BY)
SPLITS = ("calibration", "heldout")


@dataclass
class Labelled:
    corpus: str  # "corpus" (in the repository) or "real_runs" (shared, beside it)
    name: str  # path relative to its corpus folder
    path: Path
    labels: set[str]
    split: str


@dataclass
class Outcome:
    item: Labelled
    alarms: set[str] = field(default_factory=set)  # codes at warning or error, over every run of the file
    read_error: str | None = None
    crashed: bool = False
    healthy_without_loss: bool = False
    rule_errors: list[str] = field(default_factory=list)


def labels_of(text: str) -> set[str]:
    return set(text.split(";")) if text else set()


def corpus_items(reading: str = "first") -> Iterator[Labelled]:
    """Every labelled file; with reading="second" its second-reading labels where it has them."""
    for row in read_labels():
        labels = labels_of(row.get("second_labels", "")) if reading == "second" else set()
        yield Labelled("corpus", row["file"], CORPUS / row["file"], labels or labels_of(row["labels"]), row["split"])
    shared = corpus_folder()
    if shared is None:
        return
    second = {}
    if reading == "second" and REAL_RUNS_SECOND.is_file():
        with REAL_RUNS_SECOND.open(encoding="utf-8", newline="") as handle:
            second = {row["file"]: labels_of(row["second_labels"]) for row in csv.DictReader(handle)}
    for name, labels in shared_first_labels(shared):
        yield Labelled("real_runs", name, shared / name, second.get(name) or labels, split_of(name))


def reading_agreement(split: str) -> dict:
    """How far the two readings agree in one half: files with the same labels, files either reading
    calls healthy and the other not, and each label the second reading added ('+label') or removed."""
    first = {(i.corpus, i.name): i.labels for i in corpus_items("first") if i.split == split}
    counts: Counter = Counter()
    agree = to_problem = to_healthy = 0
    for item in corpus_items("second"):
        if item.split == split:
            before = first[(item.corpus, item.name)]
            agree += item.labels == before
            to_problem += "healthy" in before and "healthy" not in item.labels
            to_healthy += "healthy" in item.labels and "healthy" not in before
            counts.update(label_changes(before, item.labels))
    return {
        "files": len(first),
        "same_labels": agree,
        "healthy_to_problem": to_problem,
        "problem_to_healthy": to_healthy,
        "label_changes": dict(sorted(counts.items())),
    }


def judge(item: Labelled) -> Outcome:
    outcome = Outcome(item)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs = diagnose.load_all(item.path)
    except InputError as exc:
        outcome.read_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return outcome
    except Exception as exc:  # noqa: BLE001 - a reader crash is what this counts
        outcome.read_error, outcome.crashed = f"{type(exc).__name__}: {exc}", True
        return outcome
    for run in runs:
        analysis = diagnose.analyze(run)
        outcome.alarms |= {f.code for f in summary.problems(analysis)}
        outcome.rule_errors += [f"{code}: {error}" for code, error in analysis.errors]
        verdict = summary.verdict([analysis]).lower()
        if verdict.startswith("healthy") and not run.has("loss"):
            outcome.healthy_without_loss = True
    return outcome


def score(outcomes: list[Outcome], name_files: bool) -> dict:
    recall: dict[str, dict] = {}
    for label, codes in FOUND_BY.items():
        scored = [o for o in outcomes if label in o.item.labels and "healthy" not in o.item.labels]
        found = [o for o in scored if o.alarms & set(codes)]
        missed = [o.item.name for o in scored if not o.alarms & set(codes)]
        if scored:
            recall[label] = {
                "found": len(found),
                "files": len(scored),
                "codes": list(codes),
                **({"missed": missed} if name_files else {}),
            }
    problem_files = [o for o in outcomes if o.item.labels & set(FOUND_BY) and "healthy" not in o.item.labels]
    found_files = [
        o for o in problem_files if any(o.alarms & set(FOUND_BY[label]) for label in o.item.labels & set(FOUND_BY))
    ]
    healthy = [o for o in outcomes if "healthy" in o.item.labels]
    alarms = [o for o in healthy if o.alarms]

    def listed(items: list[Outcome], detail) -> list | int:
        return [{"file": f"{o.item.corpus}/{o.item.name}", **detail(o)} for o in items] if name_files else len(items)

    failures = [o for o in outcomes if o.read_error]
    return {
        "files": len(outcomes),
        "problem_files": {"found": len(found_files), "files": len(problem_files)},
        "label_recall": recall,
        "healthy_files": len(healthy),
        "false_alarms": listed(alarms, lambda o: {"codes": sorted(o.alarms)}),
        "read_failures": listed(failures, lambda o: {"error": o.read_error, "crash": o.crashed}),
        "crashes": sum(o.crashed for o in failures),
        "rule_errors": listed([o for o in outcomes if o.rule_errors], lambda o: {"errors": o.rule_errors}),
        "healthy_without_loss": listed([o for o in outcomes if o.healthy_without_loss], lambda o: {}),
    }


def count(value: list | int) -> int:
    return value if isinstance(value, int) else len(value)


def render(split: str, result: dict) -> str:
    pf = result["problem_files"]
    lines = [
        f"== {split} ({result.get('reading', 'first')} reading of the labels): {result['files']} files;"
        f" problem files found {pf['found']}/{pf['files']}"
        f" ({percent(pf['found'], pf['files'])})"
    ]
    for label, r in sorted(result["label_recall"].items()):
        lines.append(
            f"  {label:<20} {r['found']:>3}/{r['files']:<3} ({percent(r['found'], r['files'])})"
            f"  by {','.join(r['codes'])}"
        )
        lines += [f"      missed: {name}" for name in r.get("missed", [])]
    for key, title in (
        ("false_alarms", "false alarms on healthy files"),
        ("read_failures", "read failures"),
        ("rule_errors", "rule errors"),
        ("healthy_without_loss", "'healthy' without a training loss"),
    ):
        value = result[key]
        extra = f" of {result['healthy_files']}" if key == "false_alarms" else ""
        lines.append(f"  {title}: {count(value)}{extra}")
        for entry in value if isinstance(value, list) else []:
            detail = entry.get("codes") or entry.get("error") or entry.get("errors") or ""
            lines.append(f"      {entry['file']}  {detail}")
    lines += render_agreement(result["reading_agreement"])
    return "\n".join(lines)


def render_agreement(agreement: dict) -> list[str]:
    changes = ", ".join(f"{k} {v}" for k, v in agreement["label_changes"].items()) or "none"
    return [
        f"  readings agree (first vs second, SECOND_READING.md): {agreement['same_labels']}/{agreement['files']}"
        f" files the same labels; healthy -> a problem {agreement['healthy_to_problem']},"
        f" a problem -> healthy {agreement['problem_to_healthy']}",
        f"      labels the second reading changed: {changes}",
    ]


def percent(a: int, b: int) -> str:
    return f"{100 * a / b:.0f}%" if b else "n/a"


def files_at(commit: str) -> set[str]:
    """The paths, relative to sample_runs/corpus, of the corpus files in the repository at ``commit``."""
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", commit, "--", "sample_runs/corpus"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.removeprefix("sample_runs/corpus/") for line in listing.splitlines()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score the rules on the labelled real-log corpora.")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.add_argument("--name-heldout", action="store_true", help="also name the held-out files missed or alarmed")
    parser.add_argument(
        "--split", choices=SPLITS, help="judge only this half (tuning reads the calibration half alone)"
    )
    parser.add_argument(
        "--reading",
        choices=("first", "second"),
        default="first",
        help="score against the first reading of the labels (default, authoritative) or the second",
    )
    parser.add_argument(
        "--as-of",
        metavar="COMMIT",
        help="score only the sample_runs/corpus files that existed at COMMIT (the shared corpus does not change): "
        "the same file set as an earlier note's figures, as the corpus grows",
    )
    args = parser.parse_args(argv)
    splits = (args.split,) if args.split else SPLITS
    kept = files_at(args.as_of) if args.as_of else None
    outcomes = [
        judge(item)
        for item in corpus_items(args.reading)
        if item.split in splits and (kept is None or item.corpus != "corpus" or item.name in kept)
    ]
    results = {
        split: score(
            [o for o in outcomes if o.item.split == split], name_files=split == "calibration" or args.name_heldout
        )
        for split in splits
    }
    for split in splits:
        results[split]["reading"] = args.reading
        results[split]["reading_agreement"] = reading_agreement(split)
    results["mapping"] = {label: list(codes) for label, codes in FOUND_BY.items()}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n\n".join(render(split, results[split]) for split in splits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
