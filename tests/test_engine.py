"""The engine applies the relations rules declare to the findings actually produced; rules never
call each other, and the cross-rank rules are listed as not evaluated on a one-process run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sample_files import scenario_file

import diagnose
from diagnose.report.junit import render_junit
from diagnose.rules import RuleConfig, analyze, codes
from diagnose.verdict import evaluate

RULES_DIR = Path(diagnose.__file__).parent / "rules"
RULE_MODULES = {f"diagnose.rules.{module}" for _, module in codes.PREFIXES.values()}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_no_rule_module_imports_another_rule_module():
    for module in sorted(RULE_MODULES):
        path = RULES_DIR / f"{module.rsplit('.', 1)[1]}.py"
        reached = _imported_modules(path) & (RULE_MODULES - {module})
        assert not reached, f"{path.name} imports {sorted(reached)}: shared helpers belong in rules/helpers.py"


def test_a_plateau_at_chance_is_reported_once_as_chance_level():
    analysis = analyze(diagnose.load(scenario_file("chance_binary")))
    assert analysis.codes == ["CH001"]
    assert [(finding.code, by) for finding, by in analysis.superseded] == [("PLT001", "CH001")]


def test_the_stall_is_reported_when_the_users_chance_thresholds_rule_chance_out():
    # With CH001 tightened until it no longer fires, the stall is no longer explained by it.
    config = RuleConfig().merged(settings=["CH001.tolerance=0.001"])
    analysis = analyze(diagnose.load(scenario_file("chance_binary")), config)
    assert analysis.codes == ["PLT001"] and not analysis.superseded


def test_cross_rank_rules_are_not_evaluated_on_one_process_and_junit_does_not_pass_them():
    analysis = analyze(diagnose.load(scenario_file("healthy_mlp")))
    distributed = [rule.code for rule in codes.select_rules("DST")]
    assert {code: reason for code, reason in analysis.not_evaluated if code in distributed} == dict.fromkeys(
        distributed, "needs ranks"
    )
    result = evaluate([analysis], config=RuleConfig())
    assert not {rule.code for rule in result.evaluated(analysis)} & set(distributed)
    xml = render_junit(result)
    assert "PLT001" in xml and not any(code in xml for code in distributed)


def test_analyze_given_a_path_says_to_load_it_first() -> None:
    path = scenario_file("chance_binary")
    with pytest.raises(TypeError, match=r"diagnose\.load\(path\)"):
        analyze(path)
    assert analyze(diagnose.load(path)).run.name  # the same file, loaded, is analysed
