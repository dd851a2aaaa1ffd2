"""What a user sees, pinned: the terminal and Markdown reports of every recorded example.

A change to a report's wording or layout shows here as a diff to review. When
the change is meant, write the new snapshots with
``DIAGNOSE_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_report_snapshots.py``
and commit them with it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sample_files import EXAMPLES, recorded_runs

import diagnose
from diagnose.report import render
from diagnose.report.terminal import render_terminal

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
UPDATE = os.environ.get("DIAGNOSE_UPDATE_SNAPSHOTS") == "1"


def rendered(path: Path) -> dict[str, str]:
    analyses = [diagnose.analyze(run) for run in diagnose.load_all(path)]
    return {"txt": render_terminal(analyses, width=100), "md": render(analyses, "md")}


@pytest.mark.parametrize("path", recorded_runs(), ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_the_report_reads_as_pinned(path: Path):
    for suffix, text in rendered(path).items():
        snapshot = SNAPSHOTS / f"{path.parent.name}-{path.stem}.{suffix}"
        if UPDATE:
            snapshot.parent.mkdir(exist_ok=True)
            snapshot.write_text(text, encoding="utf-8")
        assert snapshot.is_file(), f"no snapshot {snapshot.name}: run with DIAGNOSE_UPDATE_SNAPSHOTS=1"
        assert text == snapshot.read_text(encoding="utf-8"), f"{snapshot.name} changed (see this module's doc)"


def test_every_snapshot_belongs_to_an_example():
    expected = {f"{p.parent.name}-{p.stem}.{s}" for p in recorded_runs() for s in ("txt", "md")}
    assert {p.name for p in SNAPSHOTS.glob("*")} <= expected
    assert EXAMPLES.is_dir()
