"""The code table is the one list of rules: unique, ordered, complete, and its prefixes agree with
categories and files."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import diagnose.rules
from diagnose.errors import ConfigError
from diagnose.rules import codes
from diagnose.rules.base import Rule
from diagnose.rules.config import RuleConfig


def _rule_classes_defined_in_the_package() -> set[type[Rule]]:
    found = set()
    for module_info in pkgutil.iter_modules(diagnose.rules.__path__):
        module = importlib.import_module(f"diagnose.rules.{module_info.name}")
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, Rule) and value.__module__ == module.__name__ and "code" in vars(value):
                found.add(value)
    return found


def test_codes_and_names_are_unique():
    assert len({rule.code for rule in codes.RULES}) == len(codes.RULES)
    assert len({rule.name for rule in codes.RULES}) == len(codes.RULES)


def test_the_table_is_in_code_order():
    assert [rule.code for rule in codes.RULES] == sorted(rule.code for rule in codes.RULES)


def test_every_rule_class_is_in_the_table():
    missing = _rule_classes_defined_in_the_package() - set(codes.RULES)
    assert not missing, f"rule classes missing from codes.RULES: {sorted(r.__name__ for r in missing)}"


@pytest.mark.parametrize("rule", codes.RULES, ids=lambda r: r.code)
def test_prefix_matches_category_and_file(rule):
    prefix = codes.prefix_of(rule.code)
    assert prefix in codes.PREFIXES, f"{rule.code}: prefix {prefix} has no row in codes.PREFIXES"
    category, module = codes.PREFIXES[prefix]
    assert rule.category == category
    assert rule.__module__ == f"diagnose.rules.{module}"


def test_every_prefix_is_used():
    used = {codes.prefix_of(rule.code) for rule in codes.RULES}
    assert set(codes.PREFIXES) == used


def test_get_rule_takes_a_code_or_a_name_and_nothing_vaguer():
    assert codes.get_rule("lr001").code == "LR001"
    assert codes.get_rule("loss-diverges").code == "LR001"
    with pytest.raises(KeyError):
        codes.get_rule("LR")


def test_select_takes_prefixes_names_and_comma_lists():
    picked = [rule.code for rule in codes.select_rules("LR, nf001,loss-spikes")]
    assert picked == ["LR001", "LR002", "LR003", "LR004", "NF001", "SPK001"]
    plateaus = [codes.get_rule("PLT001"), codes.get_rule("PLT002")]
    assert codes.select_rules(["PLT", "ZL"]) == [*plateaus, codes.get_rule("ZL001")]


def test_config_splits_comma_lists_and_refuses_an_unknown_pattern():
    config = RuleConfig().merged(select=["LR,NF"], ignore=["LR004"])
    enabled = [rule.code for rule in codes.RULES if config.enabled(rule)]
    assert enabled == ["LR001", "LR002", "LR003"] + [r.code for r in codes.RULES if r.code.startswith("NF")]
    with pytest.raises(ConfigError):
        RuleConfig().merged(select=["LR,XYZ"])
