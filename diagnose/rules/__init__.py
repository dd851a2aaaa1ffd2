"""Rules: read a `Run`, return findings. One class per rule, listed once in `codes.RULES`."""

from diagnose.rules.base import Category, Finding, Rule, Severity, Threshold
from diagnose.rules.codes import all_rules, get_rule, select_rules
from diagnose.rules.config import RuleConfig, load_config
from diagnose.rules.engine import Analysis, analyze

__all__ = [
    "Analysis",
    "Category",
    "Finding",
    "Rule",
    "RuleConfig",
    "Severity",
    "Threshold",
    "all_rules",
    "analyze",
    "get_rule",
    "load_config",
    "select_rules",
]
