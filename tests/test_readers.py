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
from diagnose.readers.tables import read_keras_history

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
    assert run.series("accuracy").to_dict() == {49: 0.25, 99: 0.40, 149: 0.55, 199: 0.60}
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
        ("keras_appended.csv", "keras"),
        ("run_a/history.json", "keras"),
        ("yolo/results.csv", "yolo"),
        ("nanogpt/log.txt", "nanogpt"),
        ("gpt2_stdout.log", "text"),
        ("epochs.log", "text"),
        ("keras_stdout.txt", "text"),
        ("trainer_stdout.log", "trainer_stdout"),
        ("wandb_export.csv", "csv"),
        ("custom.jsonl", "jsonl"),
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


# -- Keras ----------------------------------------------------------------------------------


def test_keras_csv_with_runs_appended_is_split_at_each_epoch_restart(tmp_path: Path) -> None:
    runs = load_all(fixture_copy(tmp_path, "keras_appended.csv"))
    assert [r.name for r in runs] == ["keras_appended#1", "keras_appended#2"]
    assert [r.series("loss").tolist() for r in runs] == [[1.20, 0.95, 0.80], [1.25, 1.10]]
    assert [r.series("val_loss").tolist() for r in runs] == [[1.10, 1.02, 1.05], [1.15, 1.08]]
    assert runs[1].series("lr").tolist() == [0.0001, 0.0001]
    assert all("2 runs appended" in " ".join(r.warnings) for r in runs)


def test_load_takes_the_last_of_several_runs_and_warns(tmp_path: Path) -> None:
    path = fixture_copy(tmp_path, "keras_appended.csv")
    with pytest.warns(UserWarning, match="holds 2 runs"):
        run = load(path)
    assert run.name == "keras_appended#2"


def test_keras_history_json_counts_epochs_from_zero(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "run_a/history.json"))
    history = json.loads((FIXTURES / "run_a/history.json").read_text())
    assert (run.format, run.name) == ("keras", "run_a")
    assert run.series("loss").to_dict() == dict(enumerate(history["loss"]))
    assert run.series("val_accuracy").tolist() == history["val_accuracy"]


def test_a_file_with_no_plain_loss_takes_its_first_loss_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "gan.json"
    path.write_text(json.dumps({"critic_loss": [-0.5, -0.8, -0.9], "gen_loss": [1.0, 1.2, 1.1]}))
    run = load(path)
    assert run.series("loss").tolist() == run.series("critic_loss").tolist()
    assert run.series("gen_loss").tolist() == [1.0, 1.2, 1.1]
    assert "critic_loss" in run.meta["loss_from"]


# -- Ultralytics YOLO ----------------------------------------------------------------------------


def test_yolo_loss_is_the_sum_of_its_parts_which_are_kept(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "yolo/results.csv"))
    assert (run.format, run.name) == ("yolo", "yolo")
    parts = run.steps[["box_loss", "cls_loss", "dfl_loss"]].sum(axis=1)
    assert run.series("loss").to_numpy() == pytest.approx(parts.to_numpy())
    val_parts = run.evals[["val_box_loss", "val_cls_loss", "val_dfl_loss"]].sum(axis=1)
    assert run.series("val_loss").to_numpy() == pytest.approx(val_parts.to_numpy())
    assert run.series("val_map50(b)").tolist() == [0.20, 0.35, 0.48]
    assert run.series("lr").tolist() == [0.07, 0.04, 0.01]
    assert run.series("loss").index.tolist() == [1, 2, 3]  # the epoch column, space padding and all
    assert "train/box_loss" in run.meta["loss_from"]


def _load_results(tmp_path: Path, *lines: str):
    path = tmp_path / "results.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load(path)


def test_yolo_classification_results_are_read_as_yolo(tmp_path: Path) -> None:
    """Classification has no box loss: ``train/loss`` whole, top-1 accuracy under ``metrics/``."""
    run = _load_results(
        tmp_path,
        "epoch,time,train/loss,metrics/accuracy_top1,metrics/accuracy_top5,val/loss,lr/pg0",
        "1,42.0,2.43,0.34,0.77,2.39,0.0033",
        "2,75.8,2.27,0.31,0.77,2.36,0.0066",
    )
    assert run.format == "yolo"
    assert run.series("val_accuracy").tolist() == [0.34, 0.31]  # top-1, measured on validation, not training
    assert run.series("val_accuracy_top5").tolist() == [0.77, 0.77]
    assert run.series("loss").tolist() == [2.43, 2.27]
    assert run.series("val_loss").tolist() == [2.39, 2.36]


def test_yolov10_loss_is_the_sum_of_both_heads_parts(tmp_path: Path) -> None:
    run = _load_results(
        tmp_path,
        "epoch,train/box_om,train/cls_om,train/box_oo,train/cls_oo,metrics/mAP50(B),val/box_om,val/box_oo,lr/pg0",
        "1,1.5,4.5,1.25,12.5,0.2,0.5,0.25,3e-05",
        "2,1.0,3.5,0.75,11.5,0.4,0.25,0.5,7e-05",
    )
    assert run.format == "yolo"
    assert run.series("loss").tolist() == [19.75, 16.75]
    assert run.series("val_loss").tolist() == [0.75, 0.75]
    assert "train/box_oo" in run.meta["loss_from"]


# -- text logs ------------------------------------------------------------------------------------


def test_nanogpt_log_txt(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "nanogpt/log.txt"))
    assert (run.format, run.name) == ("nanogpt", "nanogpt")
    assert run.series("loss").to_dict() == {0: 10.955011, 1: 10.935991, 2: 10.903013, 4: 10.70}
    assert run.nan_steps["loss"].tolist() == [3]
    assert run.series("val_loss").to_dict() == {0: 10.95, 4: 10.20}
    assert run.series("val_hellaswag").to_dict() == {0: 0.2487}


def test_nanogpt_stdout_with_validation_lines_between_steps(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "gpt2_stdout.log"))
    assert run.format == "text"
    assert run.series("loss").index.tolist() == [0, 1, 2, 3]
    assert run.series("lr").iloc[0] == pytest.approx(8.3916e-07)
    assert run.series("grad_norm").iloc[-1] == pytest.approx(9.6371)  # "norm" is the gradient norm
    # a validation line comes before the step the loop goes on with
    assert run.series("val_loss").to_dict() == {0: 10.9512, 3: 9.8}
    assert not any("hellaswag" in c for c in run.evals.columns)  # no loss on that line, no marker


def test_epoch_lines_with_train_and_val_losses_and_a_restart(tmp_path: Path) -> None:
    runs = load_all(fixture_copy(tmp_path, "epochs.log"))
    assert [r.format for r in runs] == ["text", "text"]
    assert [r.series("loss").index.tolist() for r in runs] == [[1, 2, 3], [1, 2]]
    assert runs[0].series("val_loss").tolist() == [1.9097, 1.8992, 1.8775]
    assert runs[1].series("accuracy").tolist() == [18.66, 18.45]  # percent signs dropped, the number kept


def test_keras_progress_output_under_an_epoch_line(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "keras_stdout.txt"))
    # the progress bar is redrawn with carriage returns: only its final state counts
    assert run.series("loss").to_dict() == {1: 0.2975, 2: 0.1430, 3: 0.1071}
    assert run.series("val_loss").to_dict() == {1: 0.1475, 2: 0.1065, 3: 0.0942}
    assert list(run.steps.columns) == ["step", "loss", "accuracy"]  # "5s 2ms/step" is not a metric
    assert not run.warnings


def test_trainer_printed_log_counts_logging_steps(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "trainer_stdout.log"))
    assert run.format == "huggingface"
    assert run.series("loss").tolist() == [2.3026, 1.8741, 1.5120, 1.3303]
    assert run.series("loss").index.tolist() == [1, 2, 3, 4]  # no step in the printed log: its order
    assert run.series("val_loss").to_dict() == {2: 1.7012, 4: 1.4109}  # after the latest training entry
    assert run.nan_steps["grad_norm"].tolist() == [3]
    assert 1.75 not in run.series("loss").tolist()  # the closing summary is not a step
    assert "printed log has no step" in run.meta["step_from"]


@pytest.mark.parametrize(
    "template",
    [
        "Epoch {e}/3 | Train Loss: {train:.3f} Acc: {acc:.2f} | Val Loss: {val:.3f} Acc: {val_acc:.2f}",
        "epoch={e} trn_loss={train:.3f} acc={acc:.2f} dev_loss={val:.3f} acc={val_acc:.2f}",
    ],
)
def test_a_key_repeated_after_a_split_name_belongs_to_that_split(tmp_path: Path, template: str) -> None:
    """'Train Loss: .. Acc: .. | Val Loss: .. Acc: ..': the second 'Acc' is the validation accuracy, and
    the training accuracy is not overwritten by it; the split prefixes are the key resolution's own."""
    path = tmp_path / "train.log"
    path.write_text(
        "".join(
            template.format(e=e, train=0.5 / e, acc=0.80 + e / 100, val=0.6 / e, val_acc=0.9 + e / 100) + "\n"
            for e in (1, 2, 3)
        )
    )
    run = load(path)
    assert run.series("accuracy").tolist() == [0.81, 0.82, 0.83]
    assert run.series("val_accuracy").tolist() == [0.91, 0.92, 0.93]
    assert run.series("val_loss").tolist() == [0.6, 0.3, 0.2]


def test_text_without_a_recognisable_pattern_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Training went fine.\nThe model converged after a while.\n")
    with pytest.raises(InputError, match="no training log pattern") as error:
        load(path)
    assert "\n" not in str(error.value)


# -- generic tables, and saying which column is which ---------------------------------------


def test_generic_csv_with_an_iteration_column_and_a_mapping(tmp_path: Path) -> None:
    path = fixture_copy(tmp_path, "wandb_export.csv")
    guessed = load(path)
    assert guessed.format == "csv" and not guessed.has("loss")
    assert guessed.series("val_objective").to_dict() == {200: 2.3, 400: 1.9}
    run = load(path, mapping={"loss": "train/objective", "val_loss": "eval/objective"})
    assert run.series("loss").to_dict() == {100: 2.5, 200: 2.1, 300: 1.8, 400: 1.6}
    assert run.series("val_loss").to_dict() == {200: 2.3, 400: 1.9}
    assert run.meta["step_from"] == "iteration"
    assert "note" not in run.steps.columns  # a text column is not a metric


def test_jsonl_with_its_own_names_and_a_mapping(tmp_path: Path) -> None:
    path = fixture_copy(tmp_path, "custom.jsonl")
    run = load(path, mapping={"loss": "objective", "val_loss": "holdout", "step": "it"})
    assert run.series("loss").to_dict() == {1: 0.9, 2: 0.7, 3: 0.6}
    assert run.series("val_loss").to_dict() == {2: 0.8}


def test_a_json_array_of_records_reads_like_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps([{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4, "val_loss": 0.6}], indent=2))
    run = load(path)
    assert run.format == "json"
    assert run.series("loss").to_dict() == {1: 0.5, 2: 0.4}
    assert run.series("val_loss").to_dict() == {2: 0.6}


def test_a_json_array_of_other_things_is_not_taken_for_a_log(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"text": "a sentence", "label": 1}]))
    assert detect(path) is None


def test_a_mapping_naming_a_missing_column_is_one_line(tmp_path: Path) -> None:
    path = fixture_copy(tmp_path, "wandb_export.csv")
    with pytest.raises(InputError, match="train/los'") as error:
        load(path, mapping={"loss": "train/los"})
    assert "\n" not in str(error.value)


def test_csv_with_a_byte_order_mark_and_a_cut_last_row(tmp_path: Path) -> None:
    path = tmp_path / "training_log.csv"
    path.write_bytes(b"\xef\xbb\xbfepoch,loss,val_loss\n0,1.0,1.1\n1,0.8,0.9\n2,0.7")
    run = load(path)
    assert run.format == "keras"
    assert run.series("loss").to_dict() == {0: 1.0, 1: 0.8, 2: 0.7}
    assert run.series("val_loss").to_dict() == {0: 1.1, 1: 0.9}


def test_csv_with_comment_lines_before_the_header_reads_with_a_note(tmp_path: Path) -> None:
    """A trainer written in C puts its configuration above the header (Rhymes-Like-Dimes/neural-network-c)."""
    path = tmp_path / "training_metrics.csv"
    preamble = "# Layer Sizes: 784-128-10\n# Base Learning Rate: 0.01\n\n"
    path.write_text(preamble + "Epoch,Accuracy,Loss\n1,93.4,0.21\n2,96.7,0.10\n")
    run = load(path)
    assert run.format == "keras"
    assert run.series("loss").to_dict() == {1: 0.21, 2: 0.10}
    assert any("3 comment or blank line(s) before the header skipped" in note for note in run.warnings)


# -- folders --------------------------------------------------------------------------------


def test_a_folder_reads_every_recognised_run_file_and_nothing_else(tmp_path: Path) -> None:
    folder = tmp_path / "experiments"
    for name in (
        "hf_run/trainer_state.json",
        "lightning_logs/version_0/metrics.csv",
        "keras_appended.csv",
        "nanogpt/log.txt",
    ):
        source = FIXTURES / name
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / name)
    (folder / "README.md").write_text("Epoch [1/2], Train Loss: 0.5 - notes, not a log\n")
    (folder / "config.json").write_text('{"hidden_size": 64, "layers": [1, 2]}')
    (folder / "train.py").write_text("print('step 1 | loss: 0.5')\n")
    runs = load_all(folder)
    assert sorted(r.name for r in runs) == ["hf_run", "keras_appended#1", "keras_appended#2", "nanogpt", "version_0"]
    assert sorted({r.format for r in runs}) == ["huggingface", "keras", "lightning", "nanogpt"]


def test_a_training_output_folder_is_read_once_not_once_per_checkpoint(tmp_path: Path) -> None:
    output = tmp_path / "output"
    for checkpoint in ("checkpoint-20", "checkpoint-40"):
        (output / checkpoint).mkdir(parents=True)
        shutil.copy(FIXTURES / "hf_run/trainer_state.json", output / checkpoint / "trainer_state.json")
    (output / "config.json").write_text('{"model_type": "bert"}')
    runs = load_all(output)
    assert [r.name for r in runs] == ["checkpoint-40"]
    assert any("earlier checkpoint" in w for w in runs[0].warnings)
    shutil.copy(FIXTURES / "hf_run/trainer_state.json", output / "trainer_state.json")  # written at the end
    assert [r.name for r in load_all(output)] == ["output"]


def test_a_broken_file_in_a_folder_is_skipped_with_a_warning(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "keras_appended.csv", tmp_path / "good.csv")
    (tmp_path / "bad.jsonl").write_text('{"step": 1, "loss": "high"}\n')
    runs = load_all(tmp_path)
    assert [r.name for r in runs] == ["good#1", "good#2"]
    assert any(w.startswith("skipped bad.jsonl:") for w in runs[0].warnings)


def test_an_empty_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("nothing here")
    with pytest.raises(InputError, match="no run files") as error:
        load_all(tmp_path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("input.dat", "", "empty"),
        ("input.dat", "\x00\x01\x02binary", "not a training log"),
        ("trainer_state.json", '{"log_history": [', "not valid JSON"),
        ("trainer_state.json", '{"log_history": [{"loss": 1.0}]}', "no usable step"),
        ("metrics.csv", "epoch,loss\n", "no rows"),
        ("run.jsonl", '{"step": 1, "loss": "high"}\n', "no value is a number"),
        ("input.dat", "just some words\n", "not a training log"),
    ],
)
def test_bad_input_is_one_clear_line_and_the_file_is_left_alone(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message) as error:
        load(path)
    assert "\n" not in str(error.value)
    assert path.read_text() == content


# -- key resolution and the formats of issue 10 --------------------------------------------------


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("train_losses", "loss"),
        ("TrainLoss", "loss"),
        ("train_mean_nll", "loss"),
        ("Training Loss", "loss"),
        ("train_loss_nats_per_byte", "loss"),
        ("trn_loss", "loss"),
        ("tr_loss", "loss"),
        ("train/bpb", "loss"),
        ("ce", "loss"),
        ("train/box_loss", "box_loss"),
        ("train_acc", "accuracy"),
        ("kl_loss", "kl_loss"),
        ("val_losses", "val_loss"),
        ("valid_nll", "val_loss"),
        ("Validation Loss", "val_loss"),
        ("valLoss", "val_loss"),
        ("eval_mean_nll", "val_loss"),
        ("val_box_loss", "val_box_loss"),
        ("test_loss", "val_test_loss"),
        ("val_mAP50", "val_map50"),
        ("train_step", "train_step"),
        ("train_epoch", "train_epoch"),
    ],
)
def test_loss_and_metric_keys_resolve_under_the_names_people_use(key, canonical):
    from diagnose.readers.frames import default_name

    assert default_name(key) == canonical


def test_two_training_losses_the_choice_is_stated(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "keys/two_losses.csv"))
    assert run.series("loss").tolist() == [2.0, 1.5, 1.2, 1.0]
    assert run.series("val_loss").tolist() == [1.7, 1.2]
    assert any("loss read from 'TrainLoss'" in w and "'train_mean_nll'" in w for w in run.warnings)


def test_llmc_log(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "keys/llmc_main.log"))
    assert run.format == "llmc"
    assert run.series("loss").to_dict() == {0: 11.0061, 1: 10.98, 2: 10.9}
    assert run.series("val_loss").to_dict() == {0: 10.9951}
    assert run.series("grad_norm").to_dict() == {0: 15.44, 1: 14.10}


def test_history_with_keys_that_are_not_series_reads_and_says_so(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "keys/history_with_extras.json"))
    assert run.format == "keras" and run.series("loss").tolist() == [1.0, 0.8, 0.6, 0.5]
    assert run.warnings == ["3 key(s) that are not per-epoch series ignored: epochs, params, lr_name"]


def test_lightning_csv_without_a_step_column_keeps_every_row(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "keys/lightning_without_step.csv"))
    assert run.format == "lightning"
    assert run.series("loss").tolist() == [2.0, 1.9, 1.8, 1.6, 1.5]
    assert run.series("val_loss").to_dict() == {3: 1.7, 6: 1.4}


def test_loss_lines_without_a_marker_count_as_steps(tmp_path: Path) -> None:
    run = load(fixture_copy(tmp_path, "keys/unmarked.md"), format="text")
    assert run.series("loss").to_dict() == {1: 5.45, 2: 4.05, 3: 3.15}
    assert run.series("val_loss").to_dict() == {1: 5.20, 2: 4.10, 3: 3.50}
    assert run.series("val_accuracy").tolist() == [11.0, 19.0, 28.0]


def test_a_pipe_style_log_kept_as_markdown_is_read(tmp_path: Path) -> None:
    """PyTorch's word-language-model output ('| epoch 1 | ... | loss nan | ppl nan') saved as .md (a real file
    of the corpus): without a table rule (|---|) its '|' lines are the log, not a table."""
    corpus_file = Path(__file__).resolve().parents[1] / "sample_runs/corpus/text_log"
    path = tmp_path / "model_RNN_RELU_epochs_5.md"
    shutil.copy(corpus_file / "pypi-mirror-359_nlpia2_model_RNN_RELU_epochs_5.md", path)
    run = load(path)
    assert run.format == "text" and run.n_steps == 5
    assert len(run.nan_steps["loss"]) == 70 and len(run.nan_steps["val_loss"]) == 5
    path.write_text("| step | loss |\n|---|---|\n" + path.read_text())
    with pytest.raises(InputError, match="a document, not a training log"):
        load(path)


def test_history_nested_one_level_down_is_read_with_its_nans(tmp_path: Path) -> None:
    # history.__dict__ saved whole keeps the metric lists under "history"; NaN rows stay NaN.
    run = load(fixture_copy(tmp_path, "keys/history_nested.json"))
    assert run.format == "keras"
    assert run.series("loss", keep_nan=True).tolist()[:2] == [1.0, 0.8]
    assert run.series("loss", keep_nan=True).isna().tolist() == [False, False, True, True]
    assert run.series("val_loss").tolist() == [1.1, 0.9]
    assert run.warnings == ["1 key(s) that are not per-epoch series ignored: params"]


def _epoch_csv(tmp_path: Path, losses_by_epoch: list[list[float]]) -> Path:
    lines = ["epoch,batch,loss"]
    lines += [f"{e},{b * 100 + 1},{v}" for e, losses in enumerate(losses_by_epoch, 1) for b, v in enumerate(losses)]
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_loss_summed_within_each_epoch_is_judged_by_the_epoch_totals(tmp_path: Path) -> None:
    run = load(_epoch_csv(tmp_path, [[0.2, 20.0, 40.0, 60.0], [0.15, 15.0, 30.0, 45.0], [0.1, 12.0, 24.0, 36.0]]))
    assert run.series("loss").tolist() == [60.0, 45.0, 36.0]
    assert any("running sum" in w for w in run.warnings)


def test_a_loss_that_falls_within_its_epochs_is_kept_whole(tmp_path: Path) -> None:
    run = load(_epoch_csv(tmp_path, [[2.0, 1.8, 1.7, 1.6], [1.5, 1.45, 1.4, 1.3], [1.2, 1.25, 1.1, 1.0]]))
    assert len(run.series("loss")) == 12
    assert not any("running sum" in w for w in run.warnings)


def test_the_command_line_names_every_reader_and_only_them() -> None:
    # The CLI's help takes the names from a module that does not import the readers.
    from diagnose.readers import formats

    assert formats.FORMATS == FORMATS


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("history.json", json.dumps(str({"loss": [1.0, 0.8, 0.6], "val_loss": [1.1, 0.9, 0.95]}))),
        ("history.txt", str({"loss": [1.0, 0.8, 0.6], "val_loss": [1.1, 0.9, 0.95]})),
    ],
    ids=["repr-in-a-json-string", "bare-repr"],
)
def test_a_history_saved_as_its_python_repr_is_read(tmp_path: Path, name: str, text: str) -> None:
    # json.dump(str(history.history), f) and f.write(str(history.history)) are both common.
    path = tmp_path / name
    path.write_text(text)
    assert detect(path) == "keras"
    run = load(path)
    assert run.series("loss").tolist() == [1.0, 0.8, 0.6]
    assert run.series("val_loss").tolist() == [1.1, 0.9, 0.95]


def test_a_python_repr_history_keeps_its_non_finite_values(tmp_path: Path) -> None:
    path = tmp_path / "history.txt"
    path.write_text(str({"loss": [1.0, float("nan"), float("inf")], "nan_rate": [0.0, 1.0, -float("inf")]}))
    run = load(path)
    assert run.series("loss", keep_nan=True).isna().tolist() == [False, True, False]
    assert math.isinf(run.series("loss", keep_nan=True).iloc[2])
    assert run.series("nan_rate", keep_nan=True).tolist()[:2] == [0.0, 1.0]


def test_a_damaged_python_repr_history_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "history.txt"
    path.write_text("{'loss': [1.0, 0.8, __import__('os')]}")
    with pytest.raises(InputError, match="not a readable Python dict of metric lists"):
        load(path)


def test_a_cut_off_json_history_keeps_the_series_written_whole(tmp_path: Path) -> None:
    # A job killed while json.dump wrote its history leaves the first series whole and the next cut.
    path = tmp_path / "history.json"
    path.write_text('{"loss": [0.9, 0.6, NaN], "val_loss" : [1.0, 0.7], "acc": [0.5, 0.')
    run = load(path)
    assert run.series("loss", keep_nan=True).isna().tolist() == [False, False, True]
    assert run.series("val_loss").tolist() == [1.0, 0.7]
    assert any("cut off or damaged after the key(s) loss, val_loss" in w for w in run.warnings)
    assert path.read_text().endswith("0.")


@pytest.mark.parametrize("text", ['{"loss": [0.9, 0.', '{"loss" 1', "{", '{"epoch": 3, "lo'])
def test_a_json_history_cut_before_any_whole_series_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "history.json"
    path.write_text(text)
    with pytest.raises(InputError, match="not valid JSON"):
        read_keras_history(path)
