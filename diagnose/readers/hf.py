"""Hugging Face Trainer ``trainer_state.json``: its ``log_history`` list.

Training entries carry ``loss``, ``learning_rate``, ``grad_norm``, ``epoch``;
evaluation entries carry ``eval_*`` metrics. The final summary entry
(``train_runtime``, ``total_flos``, mean ``train_loss``) describes the whole run,
not a step, and is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from diagnose.errors import InputError
from diagnose.readers import frames
from diagnose.run import Run

_SUMMARY_KEYS = ("train_runtime", "total_flos")
_META_KEYS = (
    "global_step",
    "max_steps",
    "epoch",
    "num_train_epochs",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "train_batch_size",
    "best_metric",
    "best_model_checkpoint",
    "best_global_step",
)


def read_trainer_state(path: str | Path, *, mapping: Mapping[str, str] | None = None) -> list[Run]:
    path = Path(path)
    doc = frames.read_json_document(path, "a Hugging Face trainer_state.json")
    history = doc.get("log_history") if isinstance(doc, dict) else None
    if not isinstance(history, list):
        raise InputError(f"{path}: no 'log_history' list; expected a Hugging Face trainer_state.json")
    entries = [e for e in history if isinstance(e, dict) and not any(k in e for k in _SUMMARY_KEYS)]
    if not entries:
        raise InputError(f"{path}: 'log_history' holds no logged steps")
    raw = pd.DataFrame(entries)
    rows = frames.rename_columns(raw, path, mapping)
    meta = {"trainer_state": {k: doc[k] for k in _META_KEYS if k in doc}}
    return frames.build_runs(rows, path=path, format="huggingface", meta=meta)
