"""Every rule of the code table on its examples: it raises its bad runs and leaves its good ones alone.

The layout is ``sample_runs/examples/<CODE>/bad*.<ext>`` and ``good*.<ext>``
(``bad/`` or ``good/`` folders for runs of several files, such as one file per
rank); every run in ``examples/healthy/`` is a good example of every rule.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from sample_files import EXAMPLES, HEALTHY

import diagnose
from diagnose.rules import Severity
from diagnose.rules.codes import all_rules

# Rules that have no recorded bad example yet: each is an expected failure until one is added.
# The bug rules added for issue 11: their bad/good pairs are still to be recorded from sample_runs/bugs/
# (bad = the script, good = --fixed), as sample_runs/record.py does for BUG001-BUG015.
WITHOUT_EXAMPLES: frozenset[str] = frozenset()
SERIOUS = (Severity.WARNING, Severity.ERROR)


def examples(code: str, kind: str) -> list[Path]:
    folder = EXAMPLES / code
    return sorted(p for p in folder.glob(f"{kind}*") if p.is_file() or p.is_dir()) if folder.is_dir() else []


@functools.cache
def codes_found(path: Path) -> dict[str, Severity]:
    found: dict[str, Severity] = {}
    for run in diagnose.load_all(path):
        for finding in diagnose.analyze(run):
            found.setdefault(finding.code, finding.severity)
    return found


def with_expected_failures(codes: list[str]) -> list:
    reason = "no bad example recorded for this rule yet"
    return [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=reason)) if c in WITHOUT_EXAMPLES else c
        for c in codes
    ]


CODES = [rule.code for rule in all_rules()]


def test_the_list_of_rules_without_examples_is_exact():
    assert set(CODES) >= WITHOUT_EXAMPLES, sorted(WITHOUT_EXAMPLES - set(CODES))
    missing = {code for code in CODES if not examples(code, "bad")}
    changed = sorted(missing ^ WITHOUT_EXAMPLES)
    assert missing == WITHOUT_EXAMPLES, f"record examples or update WITHOUT_EXAMPLES: {changed}"


def test_every_example_folder_belongs_to_a_rule():
    folders = {p.name for p in EXAMPLES.iterdir() if p.is_dir()} - {HEALTHY.name}
    assert folders <= set(CODES), sorted(folders - set(CODES))


@pytest.mark.parametrize("code", with_expected_failures(CODES))
def test_the_rule_raises_its_bad_examples(code: str):
    bad = examples(code, "bad")
    assert bad, f"no sample_runs/examples/{code}/bad*"
    for path in bad:
        found = codes_found(path)
        assert code in found, f"{path.relative_to(EXAMPLES)}: {code} not raised (found {sorted(found)})"


@pytest.mark.parametrize("code", CODES)
def test_the_rule_leaves_its_good_examples_and_every_healthy_run_alone(code: str):
    for path in [*examples(code, "good"), *sorted(HEALTHY.glob("*"))]:
        found = codes_found(path)
        assert found.get(code) not in SERIOUS, f"{path.relative_to(EXAMPLES)}: {code} raised as {found[code]}"
