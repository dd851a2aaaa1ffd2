"""Two gloo ranks on the CPU (issue 12): FSDP2 with a watch, and a straggler under DDP with BatchNorm.

One launch of `scripts/two_ranks.py` trains both scenarios. It runs as a subprocess in its own
session with a deadline (the script kills its ranks after 420 s and exits 3; this test kills the
whole group after 540 s), so a collective that hangs fails the test instead of stalling the suite;
its stderr is kept to check what the ranks printed at exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import diagnose

SCRIPT = Path(__file__).parent / "scripts" / "two_ranks.py"
TIMEOUT_S = 540


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("two_ranks")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        _, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the ranks too, which hold the pipes open
        process.communicate()
        pytest.fail("the two-rank run did not finish: a collective hung")
    assert process.returncode == 0, stderr[-3000:]
    return folder, stderr


def _expected(folder: Path, scenario: str) -> list[dict]:
    return [json.loads((folder / f"{scenario}.rank{rank}.json").read_text()) for rank in (0, 1)]


def test_fsdp2_records_the_global_gradient_norm_before_clipping(ranks) -> None:
    """Asserts: the recorded grad_norm is the norm clip_grad_norm_ returned (full_tensor) at every step,
    on both ranks, with no probe failing."""
    folder, _ = ranks
    run = diagnose.load(folder / "fsdp2" / "run.jsonl")
    expected = _expected(folder, "fsdp2")
    assert expected[0]["clip_norms"] == expected[1]["clip_norms"]
    for rank in (0, 1):
        recorded = run.ranks[rank].series("grad_norm")
        assert recorded.tolist() == pytest.approx(expected[rank]["clip_norms"], rel=1e-5)
        assert not (run.ranks[rank].events["event"] == "probe_error").any()
    assert run.meta["distributed"]["replicated"] is False  # sharded: the desync rule does not compare shards


def test_the_watch_adds_no_collective_under_fsdp2(ranks) -> None:
    """Asserts: every watched step (flushing every step) issues exactly the collectives of an unwatched step,
    counted by torch's CommDebugMode."""
    folder, _ = ranks
    for rank in _expected(folder, "fsdp2"):
        assert rank["collectives"] == [rank["collectives_unwatched"]] * len(rank["collectives"])


def test_the_slowed_rank_is_the_straggler_under_ddp_with_batchnorm(ranks) -> None:
    """Asserts: DST003 names the slowed rank although DDP's buffer broadcast makes the other rank wait
    inside its forward (which, counted as work, named the wrong rank)."""
    folder, _ = ranks
    run = diagnose.load(folder / "ddp_batchnorm" / "run.jsonl")
    slow = _expected(folder, "ddp_batchnorm")[0]["slow_rank"]
    waits = run.rank_frame("steps").groupby("rank")["forward_wait"].median()
    assert waits[1 - slow] > waits[slow]  # the fast rank is the one that waits in forward
    stragglers = [f for f in diagnose.analyze(run) if f.code == "DST003"]
    assert [f.rank for f in stragglers] == [slow]


def test_the_ranks_exit_cleanly(ranks) -> None:
    """Asserts: no rank printed a C++ termination or a traceback at exit."""
    _, stderr = ranks
    assert "terminate called" not in stderr
    assert "Traceback" not in stderr


def _rank_file(path: Path, rank: int, parts: list[float | str]) -> None:
    meta = {"kind": "meta", "schema": "diagnose.run/1", "name": "run", "rank": rank, "world_size": 2}
    steps = [{"kind": "step", "step": step, "loss": 1.0, "grad_norm_shard": part} for step, part in enumerate(parts, 1)]
    path.write_text("\n".join(json.dumps(line) for line in [meta, *steps]) + "\n")


def test_the_reader_combines_the_ranks_parts_of_a_sharded_norm(tmp_path: Path) -> None:
    """Asserts: grad_norm is the root of the sum of the ranks' squared parts, at steps every rank recorded,
    a NaN part gives a logged NaN; with a rank's file missing no norm is made up."""
    _rank_file(tmp_path / "run.rank0.jsonl", 0, [3.0, 1.0, "NaN"])
    _rank_file(tmp_path / "run.rank1.jsonl", 1, [4.0, 1.0, 2.0, 5.0])
    run = diagnose.load(tmp_path / "run.jsonl")
    for rank in (0, 1):
        assert run.ranks[rank].series("grad_norm", keep_nan=True).loc[:3].tolist()[:2] == pytest.approx([5.0, 2**0.5])
        assert 3 in run.ranks[rank].nan_steps["grad_norm"]
    assert 4 not in run.ranks[1].series("grad_norm").index
    (tmp_path / "run.rank1.jsonl").unlink()
    assert not diagnose.load(tmp_path / "run.jsonl").has("grad_norm")
