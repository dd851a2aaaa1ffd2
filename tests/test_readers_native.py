"""Our own run files: sessions, appended runs, resumes, and long files read in batches."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from diagnose.readers import frames, load, load_all, native
from diagnose.readers.native import read_jsonl
from diagnose.run import Run


def write_lines(path: Path, records: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def session(name: str, steps: range, *, loss_offset: float = 0.0) -> list[dict]:
    records: list[dict] = [{"kind": "meta", "schema": "diagnose.run/1", "name": name, "started": f"{name}-start"}]
    for step in steps:
        records.append({"kind": "step", "step": step, "loss": 1.0 / step + loss_offset})
        records.append({"kind": "layer", "step": step, "module": "fc", "grad_norm": float(step)})
    records.append({"kind": "event", "step": steps[-1], "event": "nonfinite", "where": name})
    return records


def test_two_runs_appended_are_two_runs_each_with_its_own_meta_layers_and_events(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "runs.jsonl", session("first", range(1, 11)) + session("second", range(1, 6)))
    runs = load_all(path)
    assert [r.name for r in runs] == ["first", "second"]
    assert [r.format for r in runs] == ["diagnose", "diagnose"]
    assert [r.n_steps for r in runs] == [10, 5]
    assert [r.layers["step"].max() for r in runs] == [10, 5]
    assert [r.events["where"].tolist() for r in runs] == [["first"], ["second"]]
    assert all("2 runs appended" in " ".join(r.warnings) for r in runs)


def test_a_resumed_session_stays_one_run_and_later_values_win(tmp_path: Path) -> None:
    records = session("exp", range(1, 11)) + session("exp", range(8, 16), loss_offset=1.0)
    run = load(write_lines(tmp_path / "resumed.jsonl", records))
    assert run.n_steps == 15
    assert run.meta["resumed"] == ["exp-start"]
    assert run.series("loss").loc[9] == pytest.approx(1.0 / 9 + 1.0)  # logged again after the resume
    assert run.meta["repeated_steps"]["loss"] == 3  # steps 8, 9 and 10 were logged twice
    assert any("logged again" in w for w in run.warnings)


def test_minimal_records_without_a_step_follow_one_another(tmp_path: Path) -> None:
    run = load(
        write_lines(tmp_path / "bare.jsonl", [{"loss": 0.9}, {"loss": 0.8}, {"step": 10, "loss": 0.7}, {"loss": 0.6}])
    )
    assert run.series("loss").index.tolist() == [0, 1, 10, 11]


def test_a_record_holding_only_an_epoch_is_not_a_training_step(tmp_path: Path) -> None:
    run = load(
        write_lines(tmp_path / "epochs.jsonl", [{"step": 1, "loss": 0.9}, {"step": 2, "val_loss": 0.8, "epoch": 1}])
    )
    assert run.n_steps == 1
    assert run.series("val_loss").to_dict() == {2: 0.8}


def test_long_file_read_in_batches_keeps_every_record_and_skips_bad_lines(tmp_path: Path) -> None:
    steps = 45_000  # more than two parsing batches
    records: list[dict | str] = [
        {"kind": "step", "step": s, "loss": 1.0, "grad_norm": 0.5} for s in range(1, steps + 1)
    ]
    records.insert(30_000, "{this line is damaged")
    records.append('{"kind": "step", "step": 45001, "lo')  # cut off by a killed writer
    path = write_lines(tmp_path / "long.jsonl", records)
    before = path.read_bytes()
    [run] = read_jsonl(path)
    assert run.n_steps == steps
    assert run.series("loss").index[-1] == steps
    assert any("line 30001: not JSON" in w for w in run.warnings)
    assert any("cut off" in w for w in run.warnings)
    assert path.read_bytes() == before


def _held_alike(fast: Run, full: Run) -> None:
    for name in ("name", "source", "format", "meta", "warnings", "rank", "nan_steps"):
        assert getattr(fast, name) == getattr(full, name), name
    for kind in ("steps", "evals", "layers", "events"):
        ours, theirs = getattr(fast, kind), getattr(full, kind)
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
        assert type(ours.index) is type(theirs.index) and ours.attrs == theirs.attrs, kind


PLAIN_CASES = {
    "ints and floats, a key now and then": [
        {"kind": "meta", "schema": "diagnose.run/1", "name": "x", "rank": 1},
        *(
            {"kind": "step", "step": s, "loss": 1.0 / s, "lr": 1e-3, **({"acc": s % 3} if s % 2 else {})}
            for s in range(1, 30)
        ),
        {"kind": "eval", "step": 10, "val_loss": 0.5, "val_accuracy": 0.8},
        {"kind": "eval", "step": 20, "val_loss": 0.4, "val_accuracy": None},
    ],
    "no meta record": [{"kind": "step", "step": s, "loss": 2.0 - s / 10} for s in range(1, 12)],
    "a value that is not a number": [
        {"kind": "step", "step": 1, "loss": 1.0},
        {"kind": "step", "step": 2, "loss": "NaN"},
    ],
    "a step repeated": [{"kind": "step", "step": 1, "loss": 1.0}, {"kind": "step", "step": 1, "loss": 0.9}],
    "a restart": [{"kind": "step", "step": s % 5 + 1, "loss": 1.0} for s in range(10)],
    "a step missing": [{"kind": "step", "step": 1, "loss": 1.0}, {"kind": "step", "loss": 0.9}],
    "a big integer": [{"kind": "step", "step": 1, "loss": 2**63}, {"kind": "step", "step": 2, "loss": 1}],
    "a true value": [{"kind": "step", "step": 1, "loss": 1.0, "flag": True}],
    "an eval key to rename": [{"kind": "step", "step": 1, "loss": 1.0}, {"kind": "eval", "step": 1, "eval_loss": 1.0}],
    "a layer record": session("s", range(1, 4)),
    "a minimal record": [{"kind": "step", "step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}],
    "a list": [{"kind": "step", "step": 1, "loss": 1.0, "lrs": [0.1, 0.2]}],
    "an empty column": [{"kind": "step", "step": 1, "loss": 1.0, "acc": None}],
    "a kind that is a list": [{"kind": "step", "step": 1, "loss": 1.0}, {"kind": ["step"], "step": 2, "loss": 0.5}],
}


@pytest.mark.parametrize("case", PLAIN_CASES)
def test_a_plain_file_is_read_as_the_general_path_reads_it_and_any_other_goes_that_way(tmp_path, case) -> None:
    path = write_lines(tmp_path / "run.jsonl", PLAIN_CASES[case])
    raw = path.read_bytes()
    fast = native._plain_run(raw, path)
    assert (fast is not None) == (case in ("ints and floats, a key now and then", "no meta record")), case
    if fast is not None:
        _held_alike(fast[0], native._runs_read_in_full(raw, path, None)[0])


def test_every_plain_run_file_of_the_repository_reads_as_the_general_path_reads_it() -> None:
    root = Path(__file__).parent.parent
    read = 0
    for path in sorted([*(root / "sample_runs").rglob("*.jsonl"), *(root / "tests" / "fixtures").rglob("*.jsonl")]):
        raw = frames.read_bytes(path)
        fast = native._plain_run(raw, path)
        if fast is not None:
            read += 1
            full = native._runs_read_in_full(raw, path, None)
            assert len(full) == 1, path
            _held_alike(fast[0], full[0])
    assert read >= 20  # 30 of the 147 run files when written: the recorded examples with no layer or event records


def test_load_reads_a_plain_file_without_the_general_path(tmp_path, monkeypatch) -> None:
    path = write_lines(tmp_path / "run.jsonl", PLAIN_CASES["ints and floats, a key now and then"])
    monkeypatch.setattr(native, "_runs_read_in_full", lambda *args: pytest.fail("read by the general path"))
    run = load(path)
    assert run.name == "x" and run.rank == 1 and list(run.evals.columns) == ["step", "val_loss", "val_accuracy"]


def test_two_minimal_form_keys_for_the_loss_in_the_same_rows_get_a_reading_note(tmp_path: Path) -> None:
    # The README's key resolution: the first is the loss, the other keeps its name, and the report says so.
    records = [{"step": s, "train_loss": 1.0 / s, "train/mean_nll": 2.0} for s in (1, 2)]
    run = load(write_lines(tmp_path / "two.jsonl", records))
    assert run.steps["loss"].tolist() == [1.0, 0.5] and run.steps["train_mean_nll"].tolist() == [2.0, 2.0]
    assert any("loss read from 'train_loss'; 'train/mean_nll' also names one" in w for w in run.warnings), run.warnings


def test_a_minimal_form_file_without_a_plain_loss_reads_its_first_loss_with_a_note(tmp_path: Path) -> None:
    # As the table readers do: a VAE's recon_loss and kl_loss, no "loss"; the first stands in, said in a note.
    records = [{"step": s, "recon_loss": 1.0 / s, "kl_loss": 0.1 * s} for s in (1, 2, 3)]
    records.append({"step": 3, "val_recon_loss": 0.9})
    run = load(write_lines(tmp_path / "vae.jsonl", records))
    assert run.series("loss").tolist() == [1.0, 0.5, 1 / 3] and run.series("kl_loss").size == 3
    assert run.series("val_loss").tolist() == [0.9]
    assert any("loss read from recon_loss (first of 2 losses" in note for note in run.warnings), run.warnings
    assert "recon_loss" in run.meta["loss_from"] and "val_recon_loss" in run.meta["val_loss_from"]
