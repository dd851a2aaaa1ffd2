"""Every rule documents itself: the four doc sections, sourced thresholds, fixes."""

from __future__ import annotations

import re

import pytest
from sample_files import EXAMPLES

from diagnose.rules.base import DOC_SECTIONS, Category, Severity
from diagnose.rules.codes import all_rules

RULES = all_rules()

MINE = {
    "LR001",
    "LR002",
    "LR003",
    "LR004",
    "OVF001",
    "OVF002",
    "OVF003",
    "OVF004",
    "CH001",
    "PLT001",
    "SPK001",
    "NF001",
    "INIT001",
    "NOI001",
    "ZL001",
}


def test_the_loss_curve_rules_are_registered():
    assert {rule.code for rule in RULES} >= MINE


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_doc_has_the_four_sections_in_order(rule):
    doc = rule.doc()
    assert list(doc)[: len(DOC_SECTIONS)] == list(DOC_SECTIONS)
    assert all(len(doc[section].split()) >= 10 for section in DOC_SECTIONS)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_identity_is_well_formed(rule):
    assert re.fullmatch(r"[A-Z]+\d{3}", rule.code)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.name)
    assert rule.title and isinstance(rule.category, Category) and isinstance(rule.severity, Severity)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_every_threshold_says_where_its_number_comes_from(rule):
    for threshold in rule.thresholds:
        assert threshold.description, f"{rule.code}.{threshold.name} has no description"
        assert len(threshold.source) >= 20, f"{rule.code}.{threshold.name} has no source"


MACHINE_PATH = re.compile(r"(^|[\s(])(/(work|tmp|home|root|Users|mnt)/|[A-Z]:\\)")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_user_facing_text_names_data_not_a_path_on_a_machine(rule):
    texts = [rule.title, *rule.doc().values()]
    texts += [f"{t.description} {t.source}" for t in rule.thresholds]
    for text in texts:
        assert not MACHINE_PATH.search(text), f"{rule.code}: {text!r}"


def test_primary_problems_sort_before_their_consequences():
    priority = {rule.code: rule.priority for rule in RULES}
    assert priority["NF001"] < priority["LR001"] < priority["SPK001"]
    assert priority["LR001"] < priority["PLT001"] and priority["CH001"] < priority["PLT001"]
    assert priority["OVF001"] < priority["OVF002"]
    assert priority["NOI001"] < priority["OVF001"]


def test_explained_codes_exist():
    codes = {rule.code for rule in RULES}
    for rule in RULES:
        assert set(rule.explains) <= codes, f"{rule.code} explains unknown codes {set(rule.explains) - codes}"


def test_a_cause_is_reported_before_what_it_explains():
    import diagnose

    run = diagnose.load(EXAMPLES / "ACT001" / "bad.jsonl")
    codes = diagnose.analyze(run).codes
    assert "CH001" in codes and codes.index("ACT001") < codes.index("CH001")


def test_superseded_codes_exist_and_no_rule_supersedes_itself():
    codes = {rule.code for rule in RULES}
    for rule in RULES:
        assert set(rule.supersedes) <= codes - {rule.code}, rule.code
