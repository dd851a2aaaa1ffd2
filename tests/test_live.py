"""Live findings: judged while a real model trains, announced once, recorded, and acted on."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import diagnose
from diagnose.errors import ConfigError
from diagnose.live import RunSketch, StopPolicy
from diagnose.live.replay import replay
from diagnose.live.status import status_board
from diagnose.probes.nan_ops import first_nonfinite_operation
from diagnose.readers.native import read_jsonl
from diagnose.report.terminal import render_terminal
from diagnose.rules import analyze
from diagnose.rules.codes import get_rule

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_runs" / "examples"
sys.path.insert(0, str(ROOT / "sample_runs" / "bugs"))
import _common as bug_scripts  # noqa: E402 - found through the path set above

NAN_STEP = 30


class BinaryNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(8, 16)
        self.out = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(torch.relu(self.hidden(x))))


def train_until_nan(path: Path, steps: int = 60, **options) -> tuple[int, diagnose.TrainingStopped | None]:
    """A binary classifier whose hand-written log loss meets a zero probability at step NAN_STEP."""
    torch.manual_seed(0)
    model = BinaryNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(32, 8)
    y = (x[:, :1] > 0).float()
    done = 0
    try:
        with diagnose.watch(model, optimizer, path, **options) as w:
            for step in range(1, steps + 1):
                optimizer.zero_grad()
                p = model(x) * (0.0 if step == NAN_STEP else 1.0)
                loss = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
                loss.backward()
                optimizer.step()
                w.log(loss=loss)
                done = step
    except diagnose.TrainingStopped as stopped:
        return done, stopped
    return done, None


def test_stop_on_error_ends_training_at_the_nan_step_with_the_finding(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    done, stopped = train_until_nan(path, stop_on="error")
    assert stopped is not None and stopped.finding.code == "NF001"
    assert done in (NAN_STEP, NAN_STEP + 1)
    assert stopped.finding.module == "out"
    assert "log of an input <= 0" in stopped.finding.message
    # The file is complete: closed, every line whole, the finding recorded at the step it was seen.
    assert path.read_bytes().endswith(b"\n")
    run = diagnose.load(path)
    assert run.steps["step"].max() == done
    analysis = analyze(run)
    nf = next(f for f in analysis.findings if f.code == "NF001")
    assert nf.seen_live == NAN_STEP
    assert f"first seen live at step {NAN_STEP}" in render_terminal([analysis], width=200)


def test_without_stop_on_the_alert_is_one_line_and_training_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen = []
    with caplog.at_level(logging.WARNING, logger="diagnose"):
        done, stopped = train_until_nan(tmp_path / "run.jsonl", on_finding=seen.append)
    assert stopped is None and done == 60
    alerts = [r.getMessage() for r in caplog.records if r.name == "diagnose" and "NF001" in r.getMessage()]
    assert len(alerts) == 1 and "\n" not in alerts[0]
    assert f"at step {NAN_STEP} in model.out (Linear)" in alerts[0] and "first fix:" in alerts[0]
    assert [f.code for f in seen] == ["NF001"]


def test_the_alert_is_also_a_diagnose_warning(tmp_path: Path) -> None:
    with pytest.warns(diagnose.DiagnoseWarning, match="NF001"):
        train_until_nan(tmp_path / "run.jsonl", steps=NAN_STEP + 2)


def test_a_failing_sink_is_switched_off_and_training_goes_on(tmp_path: Path) -> None:
    def broken(finding: object) -> None:
        raise RuntimeError("webhook down")

    done, stopped = train_until_nan(tmp_path / "run.jsonl", on_finding=broken)
    assert stopped is None and done == 60


def test_stop_on_takes_severities_and_codes() -> None:
    error = analyze(diagnose.load(SAMPLES / "NF001" / "bad.jsonl")).findings[0]
    assert error.code == "NF001"
    assert StopPolicy("error").matches(error)
    assert StopPolicy(["LR001", "NF"]).matches(error)
    assert not StopPolicy("LR001").matches(error)
    assert not StopPolicy(None).matches(error)
    with pytest.raises(ConfigError):
        StopPolicy([""])


@pytest.mark.parametrize("path", sorted(p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*.jsonl")))
def test_every_live_announcement_is_confirmed_by_the_whole_run(path: str) -> None:
    """On a healthy run (examples/healthy, the good examples) that means: nothing is announced."""
    run = diagnose.load(SAMPLES / path)
    confirmed = {f.code for f in analyze(run).findings if f.severity.value in ("warning", "error")}
    # Judged at steps 8, 16, 32, ... and at 6 more points: where the watch judges a short run.
    assert {f.code for _, f in replay(run, judgements=6)} <= confirmed


@pytest.mark.parametrize(("name", "code"), [("NF001/bad.jsonl", "NF001"), ("LR001/bad.jsonl", "LR001")])
def test_live_judgements_find_what_the_whole_run_shows_early(name: str, code: str) -> None:
    run = diagnose.load(SAMPLES / name)
    live = {f.code: step for step, f in replay(run)}
    assert code in live and code in analyze(run).codes
    assert live[code] < run.steps["step"].max() / 2 or code == "NF001"


def test_the_sketch_holds_a_bounded_number_of_steps() -> None:
    sketch = RunSketch("long")
    for step in range(1, 100_001):
        sketch.add({"kind": "step", "step": step, "loss": 1.0 / step})
    kept = len(sketch.head) + len(sketch.middle) + len(sketch.tail)
    assert kept <= sketch.head_size + sketch.middle_size + sketch.tail_size
    run = sketch.run()
    assert run.steps["step"].iloc[0] == 1 and run.steps["step"].iloc[-1] == 100_000
    assert len(run.steps) == kept
    assert len(sketch.tables["steps"].held.groups) < 10 * kept  # the rows let go are let go for good


def _records_of_file(path: Path) -> list[tuple[dict, str]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(json.loads(line), line) for line in lines]


@pytest.mark.parametrize("path", sorted(p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*.jsonl")))
def test_the_sketch_builds_the_run_the_reader_reads(path: str) -> None:
    """Every recorded example, fed to a sketch that keeps it whole: its columns make the reader's `Run`."""
    sketch = RunSketch("example", head=10**9)
    for record, line in _records_of_file(SAMPLES / path):
        sketch.add(record, line)
    if sketch.latest_step is None:
        return  # no step record (a preflight's events only): the live rules have nothing to judge yet
    _assert_same_run(sketch.run(), read_jsonl(SAMPLES / path, name="example")[-1])


@pytest.mark.parametrize(
    "steps",
    [
        [1, 2, 3, 3, 4],  # a step logged twice: merged, the later value kept
        [1, 2, 3, 4, 5, 3, 4, 5, 6],  # a resume from a checkpoint at step 3: one run, sorted and merged
        [1, 2, 3, 4, 1, 2, 3],  # the counter restarts: another run, of which the reader takes the last
    ],
)
def test_the_sketch_reads_repeated_and_restarted_steps_as_the_reader_does(steps: list[int], tmp_path: Path) -> None:
    records = [{"kind": "meta", "schema": "diagnose.run/1", "name": "steps"}]
    for index, step in enumerate(steps):
        records.append({"kind": "step", "step": step, "loss": 1.0 / (index + 1), "lr": 0.1})
        records.append({"kind": "layer", "step": step, "module": "fc", "type": "Linear", "grad_norm": index + 1.0})
        records.append({"kind": "eval", "step": step, "val_loss": float(index)})
    lines = [json.dumps(record) for record in records]
    sketch = RunSketch("steps")
    for record, line in zip(records, lines, strict=True):
        sketch.add(record, line)
    (tmp_path / "steps.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _assert_same_run(sketch.run(), read_jsonl(tmp_path / "steps.jsonl")[-1])


def test_the_sketch_of_a_live_run_is_the_run_of_its_file(tmp_path: Path, monkeypatch) -> None:
    """A watch hands the sketch its records as numbers (a NaN as a float): the same `Run` as its file."""
    import importlib

    watch = importlib.import_module("diagnose.probes.watch")  # the package's `watch` is the function
    sketches: list[RunSketch] = []

    class Keeping(watch.LiveMonitor):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.sketch = RunSketch(self.sketch.name, head=10**9)
            sketches.append(self.sketch)

    monkeypatch.setattr(watch, "LiveMonitor", Keeping)
    train_until_nan(tmp_path / "run.jsonl", steps=NAN_STEP + 5)
    # The announcements are written to the file by the monitor itself, never observed by its sketch.
    observed = [line for _, line in _records_of_file(tmp_path / "run.jsonl") if '"event":"finding"' not in line]
    (tmp_path / "observed.jsonl").write_text("\n".join(observed) + "\n", encoding="utf-8")
    from_file = read_jsonl(tmp_path / "observed.jsonl", name="run")[-1]
    assert from_file.nan_steps  # the NaN this test is about
    _assert_same_run(sketches[0].run(), from_file)


def _assert_same_run(built, read) -> None:
    for frame in ("steps", "evals", "layers", "events"):
        pd.testing.assert_frame_equal(getattr(built, frame), getattr(read, frame), obj=frame)
    assert built.nan_steps.keys() == read.nan_steps.keys()
    for column, steps in read.nan_steps.items():
        np.testing.assert_array_equal(built.nan_steps[column], steps)
    assert (built.meta, built.name, built.format, built.rank) == (read.meta, read.name, read.format, read.rank)


def _loss_through(make: object, *inputs: torch.Tensor) -> torch.Tensor:
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    return make(*leaves).sum()


@pytest.mark.parametrize(
    ("make", "inputs", "op", "problem"),
    [
        (torch.log, (torch.tensor([0.5, 0.0]),), "log", "log of an input <= 0"),
        (lambda x: torch.sqrt(x - 1), (torch.tensor([2.0, 0.5]),), "sqrt", "square root of a negative input"),
        (lambda x: torch.exp(x * 100), (torch.tensor([1.0, 0.1]),), "exp", "exp overflow"),
        (lambda a, b: a / (b - 1), (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0])), "div", "division by a value"),
        # 90000 does not fit float16; the multiplication that takes it in saves it as Inf.
        (
            lambda x, w: ((x * 300).half() * 300) * w.half(),
            (torch.tensor([1.0]), torch.tensor([1.0])),
            "mul",
            "float16 overflow",
        ),
    ],
)
def test_the_operation_that_made_the_first_nonfinite_value_is_named(make, inputs, op, problem) -> None:
    loss = _loss_through(make, *inputs)
    assert not math.isfinite(float(loss))
    found = first_nonfinite_operation(loss)
    assert found["op"] == op and problem in found["problem"]


def test_a_nan_that_came_with_the_input_is_not_blamed_on_an_operation() -> None:
    weights = torch.ones(2, requires_grad=True)
    loss = (torch.tensor([math.nan, 1.0]) * weights).sum()
    assert first_nonfinite_operation(loss)["op"] is None


def test_no_status_line_when_not_a_terminal() -> None:
    assert status_board() is None  # pytest captures standard error


def test_adapters_get_a_stop_signal_instead_of_an_exception(tmp_path: Path) -> None:
    from diagnose.adapters import Recorder

    torch.manual_seed(0)
    model = BinaryNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recorder = Recorder(tmp_path / "run.jsonl", stop_on="error")
    recorder.start(model, optimizer, 1)
    x = torch.randn(32, 8)
    stopped_at = None
    for step in range(1, 41):
        optimizer.zero_grad()
        loss = -torch.log(model(x) * (0.0 if step == 10 else 1.0)).mean()
        loss.backward()
        optimizer.step()
        recorder.train(step, loss=loss)
        if recorder.should_stop():
            stopped_at = step
            break
    assert stopped_at in (10, 11) and recorder.stopped_by.code == "NF001"
    assert recorder.watch is None and (tmp_path / "run.jsonl").read_bytes().endswith(b"\n")


def test_the_status_line_is_redrawn_in_place_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from diagnose.live.status import StatusBoard

    screen = io.StringIO()
    board = StatusBoard(Console(file=screen, force_terminal=True, width=120))
    board.update("run", 10, {"loss": 0.5, "grad_norm": 1.25}, 0)
    board.update("run", 20, {"loss": 0.25, "grad_norm": 1.0}, 1)
    board.remove("run")
    drawn = screen.getvalue()
    assert "run: step 10  loss 0.5  grad norm 1.25" in drawn and "step 20  loss 0.25" in drawn
    assert "findings 1" in drawn and "\x1b[2K" in drawn  # the line is erased and drawn again, not appended


# Bug kinds of sample_runs/bugs whose root cause a live rule names: the watch that records the buggy script
# announces it while the script trains, and the healthy twin's watch announces nothing.
LIVE_BUG_KINDS = ("no_zero_grad", "partial_optimizer", "batchnorm_eval", "sigmoid_into_bce_logits")


@pytest.mark.parametrize("kind", LIVE_BUG_KINDS)
def test_a_bug_is_named_live_and_its_fixed_twin_announces_nothing(kind: str, tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.jsonl", tmp_path / "good.jsonl"
    bug_scripts.record_pair(kind, bad, good)
    seen_live = [f for f in analyze(diagnose.load(bad)).findings if f.seen_live is not None]
    assert bug_scripts.named(bug_scripts.load_script(kind).BUG, seen_live), [f"{f.code}: {f.title}" for f in seen_live]
    assert [f.code for f in analyze(diagnose.load(good)).findings if f.seen_live is not None] == []


def test_a_judgement_applies_only_the_rules_whose_inputs_moved(monkeypatch) -> None:
    from diagnose.live.monitor import LiveMonitor
    from diagnose.rules import engine

    applied: list[str] = []
    apply = engine._apply

    def counting(rule, run, config, analysis) -> None:
        applied.append(rule.code)
        apply(rule, run, config, analysis)

    monkeypatch.setattr(engine, "_apply", counting)
    written: list[dict] = []
    monitor = LiveMonitor("selective", written.append)
    monitor.observe({"kind": "meta", "schema": 1, "name": "selective"})
    # Layer statistics at step 1 only (all units dead), the loss at every step.
    monitor.observe({"kind": "layer", "step": 1, "module": "act", "type": "ReLU", "act_dead_frac": 1.0})
    for step in range(1, 41):
        monitor.observe({"kind": "step", "step": step, "loss": 2.0 / step})
        monitor.flushed(final=True)
    assert applied.count("LR001") == 40  # the loss moved at every judgement
    assert applied.count("ACT001") == 1  # its layer statistics came once


def test_judgements_run_off_the_training_thread_and_are_over_when_the_watch_closes(tmp_path: Path, monkeypatch) -> None:
    import threading

    from diagnose.live import monitor

    judged_on: list[str] = []
    apply = monitor.apply_rules

    def recording(run, config, rules):
        judged_on.append(threading.current_thread().name)
        return apply(run, config, rules)

    monkeypatch.setattr(monitor, "apply_rules", recording)
    done, stopped = train_until_nan(tmp_path / "run.jsonl", steps=NAN_STEP + 5)
    assert stopped is None and done == NAN_STEP + 5
    assert "diagnose-live" in judged_on  # the scheduled judgements (steps 8, 16, ...)
    assert judged_on[-1] == threading.current_thread().name  # the last one, at close, on the training thread
    assert not [t for t in threading.enumerate() if t.name == "diagnose-live"]


def test_each_judgement_is_kept_with_its_step_and_cpu_time(tmp_path: Path, monkeypatch) -> None:
    from diagnose.live import monitor

    applied: list[int] = []
    apply = monitor.apply_rules

    def counting(run, config, rules):
        applied.append(1)
        return apply(run, config, rules)

    monkeypatch.setattr(monitor, "apply_rules", counting)
    torch.manual_seed(0)
    model = BinaryNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.rand(32, 1).round()
    with diagnose.watch(model, optimizer, tmp_path / "run.jsonl") as w:
        for _ in range(20):
            optimizer.zero_grad()
            loss = nn.functional.binary_cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
    judged = w._live.judged
    assert len(judged) == len(applied)  # every judgement that applied rules, wherever it ran
    assert {8, 16} <= {step for step, _ in judged} and judged[-1][0] == 20  # the checkpoints, then the close
    assert all(cpu > 0 for _, cpu in judged)


def test_a_fork_waits_for_the_judgement_in_flight(monkeypatch) -> None:
    import multiprocessing
    import threading

    from diagnose.live import monitor

    judging, release = threading.Event(), threading.Event()

    def slow_rules(run, config, rules):
        judging.set()
        release.wait(timeout=10)

    monkeypatch.setattr(monitor, "apply_rules", slow_rules)
    sketch = RunSketch("forked")
    sketch.add({"kind": "step", "step": 1, "loss": 1.0})
    judgement = monitor._Judgement(sketch, ("NF001",), [get_rule("NF001")], monitor.RuleConfig())
    assert judging.wait(timeout=10) and not judgement.done
    threading.Timer(0.2, release.set).start()  # the judgement ends while the fork waits for it
    child = multiprocessing.get_context("fork").Process(target=int)
    child.start()
    assert judgement.done  # the child was forked after the judgement thread ended
    child.join(timeout=10)
    assert child.exitcode == 0


def test_shared_views_of_one_thread_are_not_seen_or_ended_by_another() -> None:
    """A live judgement's thread and the training thread analyse at once (two watched models)."""
    import threading

    from diagnose import curves

    theirs: list[object] = []
    inside, ours_ended, leave = threading.Event(), threading.Event(), threading.Event()

    def other_thread() -> None:
        with curves.shared_views():
            theirs.append(curves._local.views)
            inside.set()
            ours_ended.wait(timeout=10)
            theirs.append(curves._local.views)
            leave.set()

    thread = threading.Thread(target=other_thread)
    with curves.shared_views():
        ours = curves._local.views
        thread.start()
        assert inside.wait(timeout=10)
    ours_ended.set()
    assert leave.wait(timeout=10)
    thread.join(timeout=10)
    assert theirs[0] is not ours and theirs[1] is theirs[0]  # their own block, still open after ours ended
    assert getattr(curves._local, "views", None) is None
