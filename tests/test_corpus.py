"""The calibration corpus of real training logs (sample_runs/corpus, see its SOURCES.md).

Every file is listed in labels.csv with a valid split and known labels, every
listed file is on disk, and every file either reads or is refused with a clear
one-line error; every rule then runs on every run the file holds without an
exception. What the rules find is scored by benchmarks/corpus_score.py, not
asserted here: the labels are heuristic readings, and recall is a figure to
report, not a pass/fail line.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from real_corpus import corpus_folder

import diagnose
from diagnose.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from corpus_score import LABELS, SPLITS, files_at
from corpus_shapes import CORPUS, read_labels, split_of

ROWS = {row["file"]: row for row in read_labels()}
BOOKKEEPING = {"labels.csv", "SOURCES.md", "SECOND_READING.md", "real_runs_second.csv"}


def test_labels_list_exactly_the_files_on_disk():
    on_disk = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file() and p.name not in BOOKKEEPING}
    assert on_disk - set(ROWS) == set(), "files without a row in labels.csv"
    assert set(ROWS) - on_disk == set(), "rows of labels.csv without a file"


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_is_consistent(name):
    row = ROWS[name]
    assert row["split"] in SPLITS and row["split"] == split_of(name)
    assert row["format"] == name.split("/", 1)[0]
    assert set(row["labels"].split(";")) <= LABELS
    second = set(row["second_labels"].split(";")) if row["second_labels"] else set()
    assert second <= LABELS
    # the second reading is recorded with a reason wherever it differs from the first
    assert bool(row["second_reason"]) == bool(second and second != set(row["labels"].split(";")))
    assert len(row["commit"]) == 40 and row["repository"].count("/") == 1 and row["path"]


def test_no_file_comes_from_a_reserved_repository():
    shared = corpus_folder()
    reserved_list = shared.parent / "corpus-reserved.txt" if shared else None
    if reserved_list is None or not reserved_list.is_file():
        pytest.skip("shared/corpus-reserved.txt is not beside the checkout")
    reserved = {
        line.strip().lower()
        for line in reserved_list.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {row["repository"].lower() for row in ROWS.values()} & reserved == set()


def _content_key(path: Path) -> str:
    """The file's bytes with CR LF as LF: a copy saved with other line endings is the same log."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def test_no_log_is_in_the_corpora_twice():
    # A copy under another name gets its own split by the path hash: one half would tune on what the other reports.
    files = [CORPUS / name for name in ROWS]
    shared = corpus_folder()
    if shared is not None:
        files += [p for p in shared.rglob("*") if p.is_file() and p.suffix != ".md"]
    by_content: dict[str, list[str]] = {}
    for path in files:
        by_content.setdefault(_content_key(path), []).append(path.name)
    assert [names for names in by_content.values() if len(names) > 1] == []


def test_sources_table_names_every_file():
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    assert [name for name in ROWS if f"| `{name}` |" not in sources] == []


@pytest.mark.parametrize("name", sorted(ROWS))
def test_file_reads_and_every_rule_runs(name):
    path = CORPUS / name
    before = path.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs = diagnose.load_all(path)
    except InputError as exc:  # a refusal is allowed, but as one clear line
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        return
    finally:
        assert path.read_bytes() == before
    assert runs
    for run in runs:
        assert diagnose.analyze(run).errors == []


def test_the_file_set_of_a_commit_is_the_corpus_then():
    """corpus_score --as-of: an earlier note's figures are compared on the files it scored."""
    try:
        now = files_at("HEAD")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file()}
    assert {row["file"] for row in read_labels()} <= now <= on_disk
