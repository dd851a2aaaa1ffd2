"""``diagnose run SCRIPT``: unmodified training scripts recorded, reported, and left unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent / "scripts"
ROOT = Path(__file__).resolve().parents[1]


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def diagnose_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return python("-m", "diagnose", "run", "--out", "runs", *args, cwd=cwd)


def records(path: Path, kind: str) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in lines if r.get("kind") == kind]


def only_run(folder: Path) -> Path:
    files = sorted((folder / "runs").glob("*.jsonl"))
    assert len(files) == 1, files
    return files[0]


def test_a_plain_loop_trains_bit_for_bit_the_same_and_is_recorded(tmp_path: Path) -> None:
    plain = python(str(SCRIPTS / "plain_loop.py"), str(tmp_path / "plain.pt"), cwd=tmp_path)
    watched = diagnose_run(str(SCRIPTS / "plain_loop.py"), str(tmp_path / "watched.pt"), cwd=tmp_path)
    assert plain.returncode == 0 and watched.returncode == 0, watched.stderr
    before, after = torch.load(tmp_path / "plain.pt"), torch.load(tmp_path / "watched.pt")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    run_file = only_run(tmp_path)
    steps = records(run_file, "step")
    assert [r["step"] for r in steps] == list(range(1, 41))  # the no_grad passes are no steps
    assert all("loss" in r for r in steps)
    assert "run 'plain_loop-Sequential': 40 steps" in watched.stdout


def test_a_lightning_fit_is_recorded_and_reported(tmp_path: Path) -> None:
    pytest.importorskip("lightning.pytorch")
    result = diagnose_run(str(SCRIPTS / "lightning_fit.py"), str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    steps = records(only_run(tmp_path), "step")
    assert len(steps) == 30 and all("loss" in r and "grad_norm" in r for r in steps[1:])
    assert "lightning_fit-Sequential" in result.stdout


def test_a_transformers_trainer_run_is_recorded_and_reported(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    result = diagnose_run(str(SCRIPTS / "transformers_trainer.py"), str(tmp_path / "hf"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    steps = records(only_run(tmp_path), "step")
    assert [r["step"] for r in steps] == list(range(1, 25))  # the evaluations at 12 and 24 are no steps
    assert all("loss" in r for r in steps)
    assert "transformers_trainer-BertForSequenceClassification" in result.stdout


def test_gradients_never_reset_are_announced_within_20_steps(tmp_path: Path) -> None:
    result = diagnose_run(str(SCRIPTS / "zero_grad_missing.py"), cwd=tmp_path)
    announced = [r for r in records(only_run(tmp_path), "event") if r["event"] == "finding"]
    assert announced and announced[0]["step"] <= 20, result.stderr


def test_exit_codes_are_the_scripts_and_the_report_comes_also_after_a_failure(tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text((SCRIPTS / "plain_loop.py").read_text() + "\nraise SystemExit(int(sys.argv[2]))\n")
    assert diagnose_run(str(script), str(tmp_path / "w.pt"), "4", cwd=tmp_path).returncode == 4
    crash = tmp_path / "crash.py"
    crash.write_text((SCRIPTS / "plain_loop.py").read_text() + "\nraise RuntimeError('boom')\n")
    result = diagnose_run(str(crash), cwd=tmp_path)
    assert result.returncode == 1
    assert "RuntimeError: boom" in result.stderr and "40 steps" in result.stdout


def test_stop_on_error_stops_a_script_at_its_nan_with_exit_code_3(tmp_path: Path) -> None:
    script = tmp_path / "nan.py"
    script.write_text("""
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(16, 4)
for step in range(1, 41):
    optimizer.zero_grad()
    out = torch.sigmoid(model(x)) * (0.0 if step == 12 else 1.0)
    loss = -torch.log(out).mean()
    loss.backward()
    optimizer.step()
    print("trained", step)
""")
    result = diagnose_run("--stop-on", "error", str(script), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "trained 12" in result.stdout and "trained 14" not in result.stdout
    assert "diagnose run: diagnose stopped training: NF001" in result.stderr
    assert "first seen live at step 12" in result.stdout


def test_bad_options_are_one_line_usage_errors(tmp_path: Path) -> None:
    result = diagnose_run("--metadata", "task", str(SCRIPTS / "plain_loop.py"), cwd=tmp_path)
    assert result.returncode == 2 and "expected KEY=VALUE" in result.stderr
    missing = diagnose_run(str(tmp_path / "nothing.py"), cwd=tmp_path)
    assert missing.returncode == 2 and "no such script" in missing.stderr
