"""Every real training log in the shared corpus loads through its reader, found
by content, with the series its SOURCES.md says it holds.

The corpus (shared/real_runs/, beside the repository) is read where it lies and
never copied here. SOURCES.md gives, per file, the number of train and eval
points of the series it describes (HF ``loss``/``eval_loss``; Lightning
``train_loss_step`` else ``train_loss``; YOLO ``train/box_loss``; a Keras
history without ``loss`` its first ``*_loss``). Each is compared with what the
reader gives as ``loss``/``val_loss``, summed over the runs of a file that
holds several.

One genuine difference is accounted for, not loosened: SOURCES.md counts
lines, and a step logged again (the jsonl file resumes from a checkpoint and
logs a few steps a second time) is one point in a `Run`, the later value
kept. The reader records how many values it replaced that way in
``meta["repeated_steps"]``, and the count adds them back.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from real_corpus import corpus_folder

from diagnose.readers import load_all
from diagnose.readers.registry import detect

CORPUS = corpus_folder() or Path("/nonexistent")
pytestmark = pytest.mark.skipif(not CORPUS.exists(), reason="the real-run corpus (shared/real_runs) is not here")

# The reader each folder of the corpus must be detected as.
FORMATS = {
    "hf_trainer_state": {"huggingface"},
    "lightning_csv": {"lightning"},
    "keras_csv": {"keras"},
    "keras_history_json": {"keras"},
    "nanogpt_log": {"nanogpt", "text"},  # log.txt files, and one raw stdout
    "yolo_results_csv": {"yolo"},
    "text_log": {"text"},
    "jsonl": {"jsonl"},
}
_ROW = re.compile(r"^\|\s*`(?P<file>[^`]+)`\s*\|.*?\|\s*(?P<train>\d+)\s*/\s*(?P<eval>\d+)\s*\|")


@functools.cache
def described_points() -> dict[str, tuple[int, int]]:
    """file (relative to the corpus) -> (train points, eval points), from the tables in SOURCES.md."""
    points = {}
    for line in (CORPUS / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            points[match["file"]] = (int(match["train"]), int(match["eval"]))
    return points


def corpus_files() -> list[str]:
    if not CORPUS.exists():
        return []
    return sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.name != "SOURCES.md")


def test_sources_md_describes_every_file_in_the_corpus() -> None:
    described = described_points()
    assert described, "no table rows found in SOURCES.md"
    assert sorted(described) == corpus_files()


@pytest.mark.parametrize("name", corpus_files())
def test_real_log_loads_by_content_with_the_described_points(name: str) -> None:
    path = CORPUS / name
    expected = FORMATS[name.split("/")[0]]
    assert detect(path) in expected
    runs = load_all(path)
    assert {run.format for run in runs} <= expected
    train, evals = described_points()[name]
    assert _points(runs, "loss") == train
    assert _points(runs, "val_loss") == evals


def _points(runs: list, column: str) -> int:
    """Points of ``column`` over all runs, NaNs that were logged included, repeats added back."""
    kept = sum(len(run.series(column, keep_nan=True)) for run in runs)
    repeated = sum(run.meta.get("repeated_steps", {}).get(column, 0) for run in runs)
    return kept + repeated


def test_the_corpus_folder_reads_as_every_run_of_every_file() -> None:
    by_file = [run.name for name in corpus_files() for run in load_all(CORPUS / name)]
    from_folder = [run.name for run in load_all(CORPUS)]
    assert sorted(from_folder) == sorted(by_file)  # SOURCES.md itself is not taken for a log
