"""Inputs that used to crash or hang the readers and the CLI (issue 12): each gives a run read
tolerantly or one line ``diagnose: error: ...`` with exit 2, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch
from probe_models import data, mlp
from torch import nn
from typer.testing import CliRunner

import diagnose
from diagnose.cli.app import app
from diagnose.errors import InputError

runner = CliRunner()


def lines(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def curve(n: int = 30) -> list[dict]:
    return [{"step": i, "loss": 2.0 / i} for i in range(1, n + 1)]


def one_line_error(*args: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("diagnose: error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_a_deeply_nested_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(lines(*curve()[:5]) + '{"a":' * 100_000 + "1" + "}" * 100_000 + "\n" + lines(*curve()[5:]))
    run = diagnose.load(path)
    assert run.n_steps == 30
    assert "line 6: JSON nested too deeply to read; ignored" in run.warnings


def test_a_kind_that_is_a_list_is_an_unknown_kind(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(lines({"kind": ["step"], "step": 0, "loss": 9.0}, *curve()))
    run = diagnose.load(path)
    assert run.n_steps == 30 and any("is not known" in w for w in run.warnings)


def test_val_loss_and_val_loss_epoch_in_one_record_stay_two_series(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    evals = [{"kind": "eval", "step": i, "val_loss": 1.0 / i, "val_loss_epoch": 1.5 / i} for i in range(5, 31, 5)]
    path.write_text(lines(*curve(), *evals))
    run = diagnose.load(path)
    assert run.series("val_loss").to_dict() == {i: 1.0 / i for i in range(5, 31, 5)}
    assert run.series("val_loss_epoch").to_dict() == {i: 1.5 / i for i in range(5, 31, 5)}


def test_a_folder_that_cannot_be_listed_is_one_line(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "run.jsonl").write_text(lines(*curve()))

    def refuse(self):  # chmod 000 does not stop root, so refuse the way the kernel would
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(InputError, match=r"runs: cannot read \(Permission denied\)$"):
        diagnose.load(folder)


def _finishes(fn, seconds: float = 20.0):
    """Run ``fn`` in a thread; a read that blocks (a pipe with no writer) fails the test instead of hanging it."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(fn())
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the read blocked"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_is_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    error = _finishes(lambda: diagnose.load(fifo))
    assert isinstance(error, InputError)
    assert str(error) == f"{fifo}: not a regular file (a pipe, socket or device); not read"
    (tmp_path / "run.jsonl").write_text(lines(*curve()))
    run = _finishes(lambda: diagnose.load(tmp_path))
    assert run.n_steps == 30
    assert "skipped pipe.jsonl: not a regular file (a pipe, socket or device); not read" in run.warnings


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("name", ["run.jsonl", "train.log"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_are_read(tmp_path: Path, encoding: str, name: str) -> None:
    path = tmp_path / name
    text = (
        lines(*curve())
        if name.endswith(".jsonl")
        else "".join(f"step {i} | loss {2.0 / i:.4f}\n" for i in range(1, 31))
    )
    bom = {"utf-16": b"", "utf-16-be": b"\xfe\xff", "utf-32": b""}[encoding]  # Python writes the mark itself for two
    path.write_bytes(bom + text.encode(encoding))
    run = diagnose.load(path)
    assert run.n_steps == 30
    assert run.series("loss").iloc[-1] == pytest.approx(2.0 / 30, abs=1e-4)


SOURCES_DOCUMENT = """# Sources of the example logs

Every file is a verbatim copy of a public training log.

| file | repository | steps | final loss |
|---|---|---|---|
| `a/trainer_state.json` | someone/model-5k-steps | 5000 | 0.41 |
| `b/metrics.csv` | other/classifier | 1200 | 0.09 |

- *step* is the logged x value (global step for HF, epoch index for Keras).
- *jump*: a point > 3x the median of the previous 10 points, loss 2.1 at step 40 in one file.
- epoch 3 loss 0.3 in the text log, step 10 loss 0.5 in another.
1. step 20 loss 0.25 (a third one)

Totals: 89 files from 71 repositories; 9.4 MB.
"""


def test_a_markdown_document_is_not_read_as_runs(tmp_path: Path) -> None:
    path = tmp_path / "SOURCES.md"
    path.write_text(SOURCES_DOCUMENT)
    assert one_line_error("report", path) == (
        f"diagnose: error: {path}: a document, not a training log: no run read "
        "from it (pass --format-in text to read it anyway)\n"
    )
    pasted = SOURCES_DOCUMENT + "\n```\n" + "".join(f"step {i} | loss {2.0 / i:.3f}\n" for i in range(1, 31)) + "```\n"
    path.write_text(pasted)
    assert diagnose.load(path).n_steps >= 30  # a log pasted into a document is still a log


def test_unreadable_paths_and_usage_errors_are_one_line(tmp_path: Path) -> None:
    assert "File name too long" in one_line_error("report", tmp_path / ("x" * 300))
    assert one_line_error("report") == "diagnose: error: Missing argument 'paths'. (see 'diagnose report --help')\n"
    assert "Missing option '--output'" in one_line_error("plot", tmp_path / "run.jsonl")


def test_values_near_the_float_limit_plot_and_render(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    records = [
        {"step": i, "loss": 1.7e308 if i % 2 else -1.7e308, "lr": 1e308, "grad_norm": 1.79e308} for i in range(1, 40)
    ]
    layers = [
        {"kind": "layer", "step": i, "module": "fc", "grad_norm": 1.7e308 if i % 2 else 1e-308} for i in range(1, 40)
    ]
    path.write_text(lines(*records, *layers, {"step": 1e308, "loss": 1.0}))
    for args in (
        ["plot", path, "-o", tmp_path / "out.png"],
        ["report", "-f", "html", "-o", tmp_path / "out.html", path],
    ):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        assert result.exception is None
    assert (tmp_path / "out.png").stat().st_size > 0 and "<html" in (tmp_path / "out.html").read_text()


def test_a_crashed_rank_with_an_empty_file_does_not_hide_the_others(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    with diagnose.watch(model, optimizer, path, rank=0, world_size=2) as w:
        for _ in range(5):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
    (tmp_path / "run.rank1.jsonl").write_bytes(b"")
    run = diagnose.load(path)
    assert run.n_steps == 5 and sorted(run.ranks) == [0]
    assert f"skipped {tmp_path / 'run.rank1.jsonl'}: file is empty" in run.warnings
