"""`diagnose report` opens one real log of every format in the shared corpus, unconverted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from real_corpus import corpus_folder
from typer.testing import CliRunner

from diagnose.cli.app import app

CORPUS = corpus_folder()
FOLDERS = sorted(p for p in CORPUS.iterdir() if p.is_dir()) if CORPUS else []


@pytest.mark.skipif(not FOLDERS, reason=f"the real-log corpus is not at {CORPUS}")
@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_report_reads_one_log_of_each_format(folder: Path) -> None:
    log = sorted(p for p in folder.iterdir() if p.is_file())[0]
    result = CliRunner().invoke(app, ["report", str(log), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "diagnose.report/2"
    assert report["runs"] and all(run["summary"]["steps"] > 0 for run in report["runs"])
