"""The real-bug scripts of sample_runs/bugs/: each declares its bug, its twin trains clean, its bug shows.

The fast kinds below are recorded here; `benchmarks/bug_suite.py` runs them all
and prints the recall figures.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import diagnose
from diagnose.rules import fixes
from diagnose.rules.codes import all_rules

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sample_runs" / "bugs"))
import _common as suite  # noqa: E402 - found through the path set above

# One or two kinds of each family (gradients, loss/output, data, optimizer, modes),
# the ones that record in about a second each.
CI_KINDS = (
    "no_zero_grad",
    "softmax_into_ce",
    "sigmoid_into_bce_logits",
    "nll_on_logits",
    "scheduler_per_batch",
    "sorted_by_label",
    "mse_broadcast",
    "batchnorm_eval",
    "partial_optimizer",
    "constant_init",
    "item_cuts_graph",
    "step_before_backward",
    "labels_shuffled_apart",
    "val_not_normalized",
    "log_of_zero_nan",
)

# Kinds whose root cause no rule names yet, and whose symptom no rule catches: expected failures that must
# fail (strict), so a kind leaves its list as soon as a rule names it.
AWAITING_NAMING_RULE: set[str] = set()
AWAITING_SYMPTOM_RULE = {"constant_init"}

REQUIRED = {
    "kind": str,
    "description": str,
    "observable": str,
    "symptoms": list,
    "root_cause": str,
    "part": str,
    "verify": dict,
}


def _awaiting(kinds: tuple[str, ...], waiting: set[str], why: str) -> list:
    return [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=why)) if k in waiting else k for k in kinds]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:
    """Record a kind's buggy run and twin once per test module: kind -> (bad, good)."""
    folder = tmp_path_factory.mktemp("bugs")
    cache: dict[str, tuple[Path, Path]] = {}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in cache:
            cache[kind] = (folder / f"{kind}.jsonl", folder / f"{kind}-fixed.jsonl")
            suite.record_pair(kind, *cache[kind])
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", suite.kinds())
def test_each_script_declares_its_bug(kind: str) -> None:
    bug = suite.load_script(kind).BUG
    for key, kind_of in REQUIRED.items():
        assert isinstance(bug.get(key), kind_of), f"{kind}: BUG[{key!r}] should be a {kind_of.__name__}"
    assert bug["kind"] == kind
    assert bug["observable"] in suite.OBSERVABLE and bug["part"] in suite.PARTS
    known = {rule.code for rule in all_rules()}
    assert bug["symptoms"] and set(bug["symptoms"]) <= known, f"{kind}: unknown codes {set(bug['symptoms']) - known}"
    re.compile(bug["root_cause"])
    for side in ("twin", "bug"):
        assert bug["verify"][side], f"{kind}: nothing verifies the {side}"
        for metric, op, bound in bug["verify"][side]:
            assert isinstance(metric, str) and op in ("<=", ">=") and isinstance(bound, float)


def test_the_suite_covers_thirty_kinds_both_live_and_curve_only() -> None:
    observable = [suite.load_script(kind).BUG["observable"] for kind in suite.kinds()]
    assert len(observable) >= 30 and set(observable) == set(suite.OBSERVABLE)


def test_both_parts_of_the_split_hold_kinds() -> None:
    parts = [suite.load_script(kind).BUG["part"] for kind in suite.kinds()]
    assert min(parts.count(part) for part in suite.PARTS) >= len(parts) // 3


@pytest.mark.parametrize("kind", CI_KINDS)
def test_twin_trains_and_bug_shows(kind: str, recorded: Callable[[str], tuple[Path, Path]]) -> None:
    bad, good = recorded(kind)
    bug = suite.load_script(kind).BUG
    assert suite.verify(bug, suite.summarize(bad), suite.summarize(good)) == []


@pytest.mark.parametrize("kind", CI_KINDS)
def test_twin_gets_no_warning(kind: str, recorded: Callable[[str], tuple[Path, Path]]) -> None:
    _, good = recorded(kind)
    alarms = suite.alarms(diagnose.analyze(diagnose.load(good)).findings)
    assert alarms == [], [f"{f.code}: {f.message}" for f in alarms]


@pytest.mark.parametrize("kind", CI_KINDS)
def test_each_report_tells_one_story(kind: str, recorded: Callable[[str], tuple[Path, Path]]) -> None:
    for path in recorded(kind):
        analysis = diagnose.analyze(diagnose.load(path))
        assert fixes.contradictions([fix for finding in analysis for fix in finding.fixes]) == []
        if analysis.findings:
            assert analysis.worst.severity.rank == max(f.severity.rank for f in analysis)


@pytest.mark.parametrize("kind", _awaiting(CI_KINDS, AWAITING_SYMPTOM_RULE, "no rule catches this symptom yet"))
def test_bug_symptom_is_recognised(kind: str, recorded: Callable[[str], tuple[Path, Path]]) -> None:
    bad, _ = recorded(kind)
    codes = {f.code for f in suite.alarms(diagnose.analyze(diagnose.load(bad)).findings)}
    assert codes & set(suite.load_script(kind).BUG["symptoms"]), f"{kind}: got {sorted(codes)}"


@pytest.mark.parametrize("kind", _awaiting(CI_KINDS, AWAITING_NAMING_RULE, "no rule names this bug yet"))
def test_bug_root_cause_is_named(kind: str, recorded: Callable[[str], tuple[Path, Path]]) -> None:
    bad, _ = recorded(kind)
    findings = diagnose.analyze(diagnose.load(bad)).findings
    assert suite.named(suite.load_script(kind).BUG, findings), [f"{f.code}: {f.title}" for f in findings]


def test_plain_log_keeps_only_step_loss_and_validation(
    recorded: Callable[[str], tuple[Path, Path]], tmp_path: Path
) -> None:
    spec = importlib.util.spec_from_file_location("bug_suite_bench", ROOT / "benchmarks" / "bug_suite.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    _, good = recorded("no_zero_grad")
    plain = bench.plain_log(good, tmp_path / "plain.jsonl")
    keys = set().union(*(json.loads(line) for line in plain.read_text().splitlines()))
    assert keys == {"step", "loss", "val_loss", "val_accuracy"}
    run = diagnose.load(plain)
    assert run.n_steps == diagnose.load(good).n_steps and len(run.evals) == 10
