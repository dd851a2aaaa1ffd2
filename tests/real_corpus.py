"""Where the shared corpus of other people's training logs lies (read in place, never copied)."""

from __future__ import annotations

import os
from pathlib import Path


def corpus_folder() -> Path | None:
    """``$DIAGNOSE_REAL_RUNS``, else ``shared/real_runs`` beside the checkout; None when absent."""
    candidates = [
        os.environ.get("DIAGNOSE_REAL_RUNS", ""),
        Path(__file__).resolve().parents[2] / "shared" / "real_runs",
    ]
    return next((Path(c) for c in candidates if c and (Path(c) / "SOURCES.md").is_file()), None)


CORPUS = corpus_folder()
