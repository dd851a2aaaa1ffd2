"""TensorBoard event files, written here with torch's SummaryWriter and read back."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from diagnose.errors import InputError
from diagnose.readers import load, load_all
from diagnose.readers.registry import detect

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")


def write_events(folder: Path, scalars: dict[str, dict[int, float]]) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for tag, points in scalars.items():
        for step, value in points.items():
            writer.add_scalar(tag, value, step)
    writer.close()
    return folder


TRAIN = {10: 2.0, 20: 1.5, 30: float("nan"), 40: 1.0}
VAL = {20: 1.75, 40: 1.25}


def test_a_folder_of_event_files_is_one_run_with_canonical_names(tmp_path: Path) -> None:
    folder = write_events(tmp_path / "exp1", {"train/loss": TRAIN, "Loss/val": VAL, "train/learning_rate": {10: 0.1}})
    assert detect(folder) == "tensorboard"
    run = load(folder)
    assert (run.format, run.name) == ("tensorboard", "exp1")
    assert run.series("loss").to_dict() == {10: 2.0, 20: 1.5, 40: 1.0}
    assert run.nan_steps["loss"].tolist() == [30]  # a NaN in the event file was logged
    assert math.isnan(run.series("loss", keep_nan=True).loc[30])
    assert run.series("val_loss").to_dict() == VAL
    assert run.series("lr").to_dict() == {10: pytest.approx(0.1)}


def test_a_single_event_file_reads_the_same(tmp_path: Path) -> None:
    folder = write_events(tmp_path / "exp2", {"train/loss": TRAIN})
    event_file = next(folder.iterdir())
    run = load(event_file)
    assert run.name == "exp2"
    assert run.series("loss").index.tolist() == [10, 20, 40]


def test_each_event_folder_in_a_tree_is_its_own_run(tmp_path: Path) -> None:
    write_events(tmp_path / "runs" / "a", {"train/loss": TRAIN})
    write_events(tmp_path / "runs" / "b", {"train/loss": {1: 3.0, 2: 2.0}})
    runs = load_all(tmp_path / "runs")
    assert sorted(r.name for r in runs) == ["a", "b"]
    assert all(r.format == "tensorboard" for r in runs)


def test_a_mapping_names_tags(tmp_path: Path) -> None:
    folder = write_events(tmp_path / "exp3", {"objective/total": TRAIN, "holdout/objective": VAL})
    run = load(folder, mapping={"loss": "objective/total", "val_loss": "holdout/objective"})
    assert run.series("val_loss").to_dict() == VAL
    assert run.series("loss").index.tolist() == [10, 20, 40]


def test_missing_tensorboard_package_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_events(tmp_path / "exp4", {"train/loss": TRAIN})
    for name in [m for m in sys.modules if m.startswith("tensorboard")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(InputError, match=r"pip install 'diagnose\[tensorboard\]'") as error:
        load(folder)
    assert "\n" not in str(error.value)
