"""Which rules run and with which thresholds: defaults, pyproject.toml, command line.

``[tool.diagnose]`` in pyproject.toml, like a linter's table::

    [tool.diagnose]
    select = ["LR", "NF001"]          # codes, code prefixes or names; default: all
    ignore = ["SPK001"]
    fail-on = "warning"                # default for `diagnose check`
    [tool.diagnose.severity]
    SPK001 = "info"
    [tool.diagnose.thresholds]
    "OVF001.min_rise" = 0.05

Command-line options (``--select``, ``--ignore``, ``--set CODE.name=value``)
are applied on top; each takes comma lists (``--select LR,NF001``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from diagnose.errors import ConfigError
from diagnose.rules.base import Rule, Severity
from diagnose.rules.codes import all_rules, matches, split_patterns


@dataclass(frozen=True)
class RuleConfig:
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    severity: Mapping[str, Severity] = field(default_factory=dict)
    thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    fail_on: Severity | None = None

    def enabled(self, rule: type[Rule]) -> bool:
        if self.select and not any(matches(rule, p) for p in self.select):
            return False
        return not any(matches(rule, p) for p in self.ignore)

    def thresholds_for(self, rule: type[Rule]) -> dict[str, float]:
        values = rule.threshold_defaults()
        values.update(self.thresholds.get(rule.code, {}))
        return values

    def severity_for(self, rule: type[Rule]) -> Severity:
        return self.severity.get(rule.code, rule.severity)

    def merged(
        self,
        *,
        select: Iterable[str] = (),
        ignore: Iterable[str] = (),
        settings: Iterable[str] = (),
        fail_on: str | None = None,
    ) -> RuleConfig:
        """This configuration with command-line options applied on top."""
        select, ignore = split_patterns(select), split_patterns(ignore)
        _validate_patterns((*select, *ignore))
        thresholds = {code: dict(values) for code, values in self.thresholds.items()}
        for setting in settings:
            code, name, value = _parse_setting(setting)
            thresholds.setdefault(code, {})[name] = value
        _validate_thresholds(thresholds)
        return replace(
            self,
            select=tuple(select) or self.select,
            ignore=self.ignore + tuple(ignore),
            thresholds=thresholds,
            fail_on=Severity.parse(fail_on) if fail_on else self.fail_on,
        )


def _validate_patterns(patterns: Iterable[str]) -> None:
    rules = all_rules()
    for pattern in patterns:
        if not any(matches(rule, pattern) for rule in rules):
            raise ConfigError(f"{pattern!r} matches no rule code, code prefix or name (`diagnose rules` lists them)")


def _parse_setting(setting: str) -> tuple[str, str, float]:
    try:
        key, raw = setting.split("=", 1)
        code, name = key.strip().split(".", 1)
        return code.strip().upper(), name.strip(), float(raw)
    except ValueError:
        raise ConfigError(
            f"bad threshold setting {setting!r}: expected CODE.name=number, e.g. OVF001.min_rise=0.1"
        ) from None


def _validate_thresholds(thresholds: Mapping[str, Mapping[str, float]]) -> None:
    known = {rule.code: rule for rule in all_rules()}
    for code, values in thresholds.items():
        rule = known.get(code)
        if rule is None:
            raise ConfigError(f"unknown rule code {code!r} in a threshold setting")
        for name in values:
            if name not in rule.threshold_defaults():
                names = ", ".join(rule.threshold_defaults()) or "none"
                raise ConfigError(f"rule {code} has no threshold {name!r} (it has: {names})")


def find_pyproject(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_config(pyproject: Path | None = None) -> RuleConfig:
    """Read ``[tool.diagnose]`` from the nearest pyproject.toml (defaults when absent)."""
    path = pyproject or find_pyproject()
    if path is None:
        return RuleConfig()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get("diagnose", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read [tool.diagnose] ({exc})") from None
    return config_from_table(table, origin=str(path))


# The keys [tool.diagnose] reads; fail_on is accepted for fail-on.
TABLE_KEYS = ("select", "ignore", "fail-on", "fail_on", "severity", "thresholds")


def config_from_table(table: Mapping[str, Any], origin: str = "configuration") -> RuleConfig:
    unknown_keys = sorted(set(table) - set(TABLE_KEYS))
    if unknown_keys:  # a misspelt key would be ignored without a word
        expected = ", ".join(key for key in TABLE_KEYS if key != "fail_on")
        keys = ", ".join(unknown_keys)
        raise ConfigError(f"{origin}: unknown key(s) {keys} in [tool.diagnose] (expected {expected})")
    try:
        thresholds: dict[str, dict[str, float]] = {}
        for key, value in (table.get("thresholds") or {}).items():
            code, name, number = _parse_setting(f"{key}={value}")
            thresholds.setdefault(code, {})[name] = number
        _validate_thresholds(thresholds)
        fail_on = table.get("fail-on") or table.get("fail_on")
        select, ignore = split_patterns(table.get("select") or ()), split_patterns(table.get("ignore") or ())
        _validate_patterns((*select, *ignore))
        severity = {code.upper(): Severity.parse(v) for code, v in (table.get("severity") or {}).items()}
        known = {rule.code for rule in all_rules()}
        unknown = sorted(set(severity) - known)
        if unknown:  # a misspelt code would change nothing, and say nothing
            raise ConfigError(f"{origin}: unknown rule code(s) {', '.join(unknown)} in [tool.diagnose.severity]")
        return RuleConfig(
            select=tuple(select),
            ignore=tuple(ignore),
            severity=severity,
            thresholds=thresholds,
            fail_on=Severity.parse(fail_on) if fail_on else None,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{origin}: bad [tool.diagnose] table: {exc}") from None
