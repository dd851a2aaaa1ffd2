"""Readers for other tools' logs: each gives the same `Run`, with canonical names."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from diagnose.errors import InputError
from diagnose.readers import load, load_all
from diagnose.readers.registry import FORMATS, detect

FIXTURES = Path(__file__).parent / "fixtures" / "readers"


def fixture_copy(tmp_path: Path, name: str) -> Path:
    """A private copy, so a test can check that reading never changes its input."""
    source = FIXTURES / name
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        return Path(shutil.copytree(source, target))
    return Path(shutil.copy(source, target))


# -- Hugging Face Trainer --------------------------------------------------------------


def test_trainer_state_gives_canonical_train_and_eval_series(tmp_path: Path) -> None:
    path = fixture_copy(tmp_path, "hf_run/trainer_state.json")
    before = path.read_bytes()
    run = load(path)
    assert (run.format, run.name) == ("huggingface", "hf_run")  # generic file name: the folder names the run
    assert run.series("loss").to_dict() == {10: 2.3, 20: 1.7, 30: 1.1, 40: 0.9}
    assert run.series("lr").iloc[0] == 5e-05
    assert run.series("val_loss").to_dict() == {20: 1.2, 40: 0.61}
    assert run.series("val_accuracy").to_dict() == {20: 0.52, 40: 0.71}
    assert run.nan_steps["grad_norm"].tolist() == [30]  # logged as NaN, not missing
    assert run.meta["trainer_state"]["global_step"] == 40
    assert path.read_bytes() == before


def test_trainer_state_summary_entry_is_not_a_step(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "hf_run/trainer_state.json"))
    history = json.loads((FIXTURES / "hf_run/trainer_state.json").read_text(), parse_constant=float)["log_history"]
    train_entries = [e for e in history if "loss" in e]
    assert len(run.series("loss")) == len(train_entries)
    assert "runtime" not in run.steps.columns and "total_flos" not in run.steps.columns


def test_several_eval_sets_are_kept_and_the_first_stands_for_val_loss(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "hf_groups.json"))
    assert run.format == "huggingface"
    assert run.series("val_en_loss").tolist() == run.series("val_loss").tolist() == [3.0, 2.0, 2.2]
    assert run.series("val_fr_loss").tolist() == [3.5, 2.6, 2.4]
    assert "val_en_loss" in run.meta["val_loss_from"]
    assert len(run.evals) == 3  # one row per evaluation step, the groups side by side


def test_trainer_state_without_log_history_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "trainer_state.json"
    path.write_text('{"global_step": 3}')
    with pytest.raises(InputError, match="log_history") as error:
        load(path)
    assert "\n" not in str(error.value)


# -- Lightning CSVLogger -----------------------------------------------------------------


def test_lightning_prefers_the_per_step_loss_and_keeps_the_epoch_one(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "lightning_logs/version_0/metrics.csv"))
    assert (run.format, run.name) == ("lightning", "version_0")
    assert run.series("loss").to_dict() == {49: 2.10, 99: 1.85, 199: 1.40}
    assert run.series("loss_epoch").to_dict() == {124: 1.95, 249: 1.45}
    assert run.series("acc").to_dict() == {49: 0.25, 99: 0.40, 149: 0.55, 199: 0.60}
    assert run.series("lr").to_dict() == {49: 0.001, 149: 0.0005}  # LearningRateMonitor's lr-Adam
    assert run.series("val_loss").to_dict() == {124: 1.70, 249: 1.35}


def test_lightning_nan_text_is_a_logged_nan_and_empty_cells_are_not(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "lightning_logs/version_0/metrics.csv"))
    assert run.nan_steps["loss"].tolist() == [149]
    assert math.isnan(run.series("loss", keep_nan=True).loc[149])
    assert "val_loss" not in run.nan_steps


def test_a_test_score_never_passes_for_the_validation_curve(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "lightning_logs/version_0/metrics.csv"))
    assert run.series("val_test_loss").to_dict() == {249: 1.5}
    assert run.series("val_loss").loc[249] == 1.35


# -- choosing a reader ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hf_run/trainer_state.json", "huggingface"),
        ("hf_groups.json", "huggingface"),
        ("lightning_logs/version_0/metrics.csv", "lightning"),
    ],
)
def test_format_is_detected_from_content(name: str, expected: str) -> None:
    assert detect(FIXTURES / name) == expected


def test_forced_format_overrides_detection(tmp_path: Path) -> None:
    path = fixture_copy(tmp_path, "lightning_logs/version_0/metrics.csv")
    run = load(path, format="csv")
    assert run.format == "csv"
    assert "lr_adam" in run.steps.columns  # only the Lightning reader knows LearningRateMonitor's names


def test_unknown_forced_format_names_the_known_ones(tmp_path: Path) -> None:
    path = fixture_copy(tmp_path, "hf_groups.json")
    with pytest.raises(InputError, match="unknown input format") as error:
        load(path, format="excel")
    assert all(name in str(error.value) for name in FORMATS)
