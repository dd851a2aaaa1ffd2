"""Rules: read a `Run`, return findings. One class per rule, listed in one registry."""

from diagnose.rules.base import Category, Finding, Rule, Severity, Threshold, all_rules, get_rule, register
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
    "register",
]
