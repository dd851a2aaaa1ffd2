"""The columnar (pyarrow) parse of run files gives the very `Run`s the line-by-line parse gives."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diagnose.readers import arrow_lines, columnar, load_all
from tests.real_corpus import CORPUS

pytest.importorskip("pyarrow.json")

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "sample_runs").rglob("*.jsonl"))
CORPUS_FILES = sorted(CORPUS.rglob("*.jsonl")) if CORPUS else []

# Lines that stress the tolerances: NaN and Infinity as strings and bare tokens, per-group
# learning rates with a NaN in them, a key only some records have, a minimal-form record
# with another step name, an appended second run, blank lines and a cut last line.
TRICKY = [
    '{"kind":"meta","schema":"diagnose.run/1","name":"a","metadata":{"task":"multiclass"}}',
    '{"kind":"step","step":1,"loss":2.0,"lr":0.1,"lrs":[0.1,0.2]}',
    '{"kind":"step","step":2,"loss":"NaN","lr":0.1,"lrs":[0.1,"NaN"],"extra":5}',
    "",
    '{"kind":"step","step":3,"loss":"Infinity","grad_norm":"-Infinity"}',
    '{"kind":"eval","step":3,"eval_loss":1.5}',
    '{"kind":"event","step":2,"event":"nonfinite","where":"fc1","detail":"x"}',
    '{"kind":"layer","step":3,"module":"fc1","type":"Linear","grad_norm":NaN}',
    '{"step":4,"loss":NaN}',
    '{"iteration":5,"loss":Infinity,"val_loss":2}',
    '{"kind":"meta","name":"b","started":"later"}',
    '{"kind":"step","step":1,"loss":3.0}',
    '{"kind":"step","step":2,"lo',
]


def both_readers(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    monkeypatch.setattr(columnar, "MIN_BYTES", 0)
    fast = load_all(path)
    monkeypatch.setattr(columnar, "MIN_BYTES", 1 << 62)
    pure = load_all(path)
    return fast, pure


def assert_same_runs(fast: list, pure: list) -> None:
    assert [r.name for r in fast] == [r.name for r in pure]
    for a, b in zip(fast, pure, strict=True):
        for frame in ("steps", "evals", "layers", "events"):
            pd.testing.assert_frame_equal(getattr(a, frame), getattr(b, frame))
        assert (a.meta, a.warnings, a.format, a.rank) == (b.meta, b.warnings, b.format, b.rank)
        assert a.nan_steps.keys() == b.nan_steps.keys()
        for column, steps in a.nan_steps.items():
            np.testing.assert_array_equal(steps, b.nan_steps[column])


def test_the_columnar_parse_is_taken_for_a_file_it_can_read(tmp_path: Path) -> None:
    path = tmp_path / "tricky.jsonl"
    path.write_text("\n".join(TRICKY))
    assert columnar.read_tables(path.read_bytes(), ("step", "eval", "layer", "event")) is not None


def test_tricky_lines_read_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tricky.jsonl"
    path.write_text("\n".join(TRICKY))
    fast, pure = both_readers(path, monkeypatch)
    assert len(pure) == 2 and any("cut off" in w for w in pure[0].warnings)
    assert "loss" in pure[0].nan_steps
    assert_same_runs(fast, pure)


def parses_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads that pyarrow-parse a file from now on, one entry a parse."""
    seen: list[str] = []
    parse = arrow_lines._parse_now

    def watched(raw: bytes) -> arrow_lines.Parsed | None:
        seen.append(threading.current_thread().name)
        return parse(raw)

    monkeypatch.setattr(arrow_lines, "_parse_now", watched)
    return seen


@pytest.mark.parametrize("lines", [TRICKY, [*TRICKY[:5], "garbage", *TRICKY[5:]]], ids=["columnar", "pure"])
def test_a_file_read_ahead_is_parsed_once_in_the_background_into_the_same_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[str]
) -> None:
    path = tmp_path / "tricky.jsonl"
    path.write_text("\n".join(lines))
    monkeypatch.setattr(arrow_lines, "MIN_BYTES", 0)
    monkeypatch.setattr(columnar, "MIN_BYTES", 0)
    seen = parses_seen(monkeypatch)
    arrow_lines.read_ahead([path, path])
    early = load_all(path)
    assert seen == ["diagnose-read-ahead"]  # the reader took the thread's parse (or its refusal) and made none
    monkeypatch.setattr(columnar, "MIN_BYTES", 1 << 62)
    assert_same_runs(early, load_all(path))


def test_only_long_json_lines_files_are_read_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "small.jsonl").write_text(TRICKY[1])
    (tmp_path / "long.csv").write_text("step,loss\n" + "1,0.5\n" * 30)
    (tmp_path / "folder.jsonl").mkdir()
    monkeypatch.setattr(arrow_lines, "MIN_BYTES", 100)
    seen = parses_seen(monkeypatch)
    names = ["small.jsonl", "long.csv", "folder.jsonl", "missing.jsonl"]
    arrow_lines.read_ahead([tmp_path / name for name in names])
    arrow_lines.read_ahead([tmp_path / "long.csv"], "jsonl")
    arrow_lines.read_ahead([tmp_path / "small.jsonl"], "csv")
    assert seen == [] and all(arrow_lines.early_bytes(tmp_path / name) is None for name in names)


@pytest.mark.parametrize(
    "line",
    [
        "garbage",
        '{"kind":"weird","step":1}',
        '{"kind":"event","step":1,"detail":{"a":1}}',
        '{"kind":"step","step":2,"loss":true}',
        "[1, 2]",
        '{"kind":"event","step":2,"event":"finding","module":null}',  # a key whose only value is null
        '{"kind":"event","step":2,"event":"finding","module": null}',
    ],
)
def test_what_the_columnar_parse_cannot_match_goes_to_the_line_by_line_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(['{"kind":"step","step":1,"loss":1.0}', line, '{"kind":"step","step":3,"loss":0.5}']))
    fast, pure = both_readers(path, monkeypatch)
    assert_same_runs(fast, pure)


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        (b'{"kind":"step","step":1,"loss":1.0}\n{"kind":"event","step":1,"module":null}\n', False),
        (b'{"kind":"step","step":1,"loss":1.0}\n{"kind":"event","step":1,"module": null}\n', False),
        # "ull" without a null (what is looked for first): pyarrow parses the file
        (b'{"kind":"meta","name":"full null run"}\n{"kind":"step","step":1,"loss":1.0,"lr_null":2}\n', True),
    ],
)
def test_a_file_with_a_key_set_to_null_is_left_to_the_pure_reader(body: bytes, parsed: bool) -> None:
    assert (arrow_lines._parse_now(body) is not None) is parsed


@pytest.mark.parametrize("path", SAMPLES + CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_runs_read_alike(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, pure = both_readers(path, monkeypatch)
    assert_same_runs(fast, pure)


def test_a_wide_run_reads_into_frames_that_pandas_can_work_on_and_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 240 scalars, each step logged in two calls (merged into one row): a frame of one block per
    # column made pandas warn that it is highly fragmented when merging the repeated steps.
    lines = []
    for step in range(1, 6):
        for half in range(2):
            values = ",".join(f'"m{half}_{i}":{step * 0.5 + i}' for i in range(120))
            lines.append(f'{{"kind":"step","step":{step},{values}}}')
    path = tmp_path / "wide.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast, pure = both_readers(path, monkeypatch)
    assert_same_runs(fast, pure)
    assert fast[0].steps.shape == (5, 241)


def test_the_frames_of_a_run_read_in_columns_are_its_own_to_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyarrow hands out read-only views of its memory; a run's frames must not hold them.
    path = tmp_path / "run.jsonl"
    lines = [
        '{"kind":"step","step":1,"loss":2.0,"lr":0.1}',
        '{"kind":"eval","step":1,"val_loss":2.5}',
        '{"kind":"layer","step":1,"module":"fc1","grad_norm":0.5}',
        '{"kind":"event","step":1,"event":"skipped","count":2,"scale":0.5}',
        '{"kind":"step","step":2,"loss":1.0,"lr":0.1}',
    ]
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(columnar, "MIN_BYTES", 0)
    changed = set()
    for run in load_all(path):
        for kind in ("steps", "evals", "layers", "events"):
            frame = getattr(run, kind)
            for column in frame.columns if len(frame) else ():
                frame.loc[frame.index[0], column] = frame[column].iloc[-1]
                changed.add(kind)
    assert changed == {"steps", "evals", "layers", "events"}


def test_a_record_longer_than_a_block_is_parsed_in_larger_blocks() -> None:
    meta = {"kind": "meta", "schema": "diagnose.run/1", "name": "wide", "note": "x" * (10 << 20)}
    raw = (json.dumps(meta) + "\n" + '{"kind":"step","step":1,"loss":2.0}\n').encode()
    parsed = arrow_lines.parse(raw)
    assert parsed is not None and parsed.table.num_rows == 2


def test_a_line_pyarrow_cannot_read_is_parsed_once_and_left_to_the_pure_reader(monkeypatch) -> None:
    import pyarrow.json as pj

    calls = []
    read_json = pj.read_json
    monkeypatch.setattr(pj, "read_json", lambda *args, **kwargs: calls.append(1) or read_json(*args, **kwargs))
    raw = b'{"kind":"step","step":1,"loss":2.0}\n{"kind":"step","step":2,"loss":nope}\n{"kind":"step","step":3}\n'
    assert arrow_lines.parse(raw) is None and len(calls) == 1
