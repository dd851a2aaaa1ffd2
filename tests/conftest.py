import os
import shutil
from pathlib import Path

import pytest

# Keep the suite fast and deterministic on small CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    """``{"healthy": path, "broken": path}``: fresh copies of two sample runs, so that
    a test writing next to them never touches the committed samples."""
    from cli_samples import CHOSEN

    return {key: Path(shutil.copy(path, tmp_path / f"{key}.jsonl")) for key, path in CHOSEN.items()}


@pytest.fixture
def test_rule(monkeypatch):
    """Adds the test rule `FinalAboveFirst` (TST001) to the code table for one test."""
    from cli_samples import FinalAboveFirst

    from diagnose.rules import codes

    monkeypatch.setattr(codes, "RULES", (*codes.RULES, FinalAboveFirst))
    return FinalAboveFirst
