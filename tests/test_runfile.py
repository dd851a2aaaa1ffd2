"""The run file as a contract: what the writer writes, the reader reads back, bad input included."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import diagnose
from diagnose.errors import InputError
from diagnose.runfile import RunWriter


def test_non_finite_values_round_trip_as_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    writer = RunWriter(path)
    for step, loss in enumerate([0.5, math.inf, -math.inf, math.nan, 0.25], start=1):
        writer.write({"kind": "step", "step": step, "loss": loss})
    writer.close()
    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    run = diagnose.load(path)
    loss = run.series("loss", keep_nan=True)
    assert loss.loc[1] == 0.5 and loss.loc[2] == math.inf and loss.loc[3] == -math.inf
    assert math.isnan(loss.loc[4]) and loss.loc[5] == 0.25
    assert run.series("loss").index.tolist() == [1, 2, 3, 5]  # a logged NaN is not silently a value


def test_minimal_form_written_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "hand.jsonl"
    path.write_text(
        '{"step": 10, "loss": 0.52}\n{"step": 10, "val_loss": 0.61}\n{"step": 20, "loss": 0.41}\n'
        '{"step": 20, "eval_loss": 0.55, "eval_accuracy": 0.8}\n'
    )
    run = diagnose.load(path)
    assert run.series("loss").to_dict() == {10: 0.52, 20: 0.41}
    assert run.series("val_loss").to_dict() == {10: 0.61, 20: 0.55}
    assert run.series("val_accuracy").to_dict() == {20: 0.8}


def test_python_json_nan_tokens_are_read_as_logged_nans(tmp_path: Path) -> None:
    path = tmp_path / "py.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n" + json.dumps({"step": 2, "loss": float("nan")}) + "\n")
    run = diagnose.load(path)
    assert run.nan_steps["loss"].tolist() == [2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "empty"),
        ("   \n\n", "empty"),
        ("this is not json\nnor this\n", "no step"),
        ('{"kind": "meta", "schema": "diagnose.run/1"}\n', "no step"),
    ],
)
def test_unreadable_input_is_one_clear_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message) as error:
        diagnose.load(path)
    assert "\n" not in str(error.value)


def test_tolerant_read_of_damaged_lines_strings_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "messy.jsonl"
    lines = [
        '{"step": 1, "loss": 0.9, "my_metric": 3}',
        "garbage line",
        '{"step": 2, "loss": "0.8"}',
        '{"step": 3, "loss": "oops"}',
        '{"kind": "mystery", "step": 3}',
        "[1, 2, 3]",
        '{"step": 4, "loss": 0.6}',
        '{"step": 5, "lo',
    ]
    path.write_text("\n".join(lines))
    before = path.read_bytes()
    run = diagnose.load(path)
    assert run.series("loss").to_dict() == {1: 0.9, 2: 0.8, 4: 0.6}
    assert run.series("my_metric").to_dict() == {1: 3.0}
    text = " | ".join(run.warnings)
    for expected in ("not JSON", "cut off", "not numbers", "mystery", "not a JSON object"):
        assert expected in text
    assert path.read_bytes() == before


def test_appended_runs_are_split_not_mixed(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text("".join(f'{{"step": {s}, "loss": {1 / s}}}\n' for s in [1, 2, 3, 1, 2]))
    runs = diagnose.load_all(path)
    assert [r.series("loss").index.tolist() for r in runs] == [[1, 2, 3], [1, 2]]
    with pytest.warns(UserWarning, match="holds 2 runs"):
        assert diagnose.load(path).n_steps == 2


def test_writer_appends_and_repairs_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    writer = RunWriter(path)
    writer.write({"kind": "step", "step": 3, "loss": 0.5})
    writer.close()
    run = diagnose.load(path)
    assert run.series("loss").to_dict() == {1: 1.0, 3: 0.5}


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("loss", "loss"),
        ("train/loss", "loss"),
        ("train_loss_step", "loss"),
        ("learning_rate", "lr"),
        ("train/learning_rate", "lr"),
        ("grad_norm", "grad_norm"),
        ("train/acc", "accuracy"),
        ("train/acc1", "accuracy"),
        ("accuracy_top5", "accuracy_top5"),
    ],
)
def test_step_keys_take_their_canonical_names(key: str, canonical: str) -> None:
    from diagnose.runfile import schema

    assert not schema.is_eval_key(key) and schema.canonical_step_key(key) == canonical


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("val_loss", "val_loss"),
        ("eval_loss", "val_loss"),
        ("validation/loss", "val_loss"),
        ("eval_accuracy", "val_accuracy"),
        ("test_loss", "val_test_loss"),
        ("test/acc", "val_test_accuracy"),
        ("val_acc", "val_accuracy"),
        ("val/accuracy_top1", "val_accuracy"),
        ("eval_top1", "val_accuracy"),
    ],
)
def test_eval_keys_take_their_canonical_names_and_test_scores_stay_apart(key: str, canonical: str) -> None:
    from diagnose.runfile import schema

    assert schema.is_eval_key(key) and schema.canonical_eval_key(key) == canonical
