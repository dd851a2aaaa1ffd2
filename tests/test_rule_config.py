"""Rule selection and thresholds from [tool.diagnose] and the command line, checked like a linter's."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnose.errors import ConfigError
from diagnose.rules import all_rules
from diagnose.rules.config import RuleConfig, load_config


def enabled_codes(config: RuleConfig) -> set[str]:
    return {rule.code for rule in all_rules() if config.enabled(rule)}


def test_select_by_prefix_and_name_ignore_by_code(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[tool.diagnose]\nselect = ["LR", "overfitting"]\nignore = ["LR004"]\n'
        '[tool.diagnose.severity]\nLR002 = "info"\n'
        '[tool.diagnose.thresholds]\n"OVF001.min_rise" = 0.3\n'
    )
    config = load_config(pyproject)
    assert enabled_codes(config) == {"LR001", "LR002", "LR003", "OVF001"}
    lr002 = next(r for r in all_rules() if r.code == "LR002")
    ovf001 = next(r for r in all_rules() if r.code == "OVF001")
    assert config.severity_for(lr002).value == "info"
    assert config.thresholds_for(ovf001)["min_rise"] == 0.3


def test_command_line_adds_to_the_file() -> None:
    config = RuleConfig(ignore=("SPK001",)).merged(ignore=["NOI001"], settings=["OVF001.min_rise=0.2"])
    assert {"SPK001", "NOI001"}.isdisjoint(enabled_codes(config))
    assert config.thresholds["OVF001"]["min_rise"] == 0.2


@pytest.mark.parametrize(
    "table",
    [
        '[tool.diagnose]\nselect = ["XYZ"]\n',
        '[tool.diagnose]\nignore = ["no-such-rule"]\n',
        '[tool.diagnose.thresholds]\n"OVF001.no_such_threshold" = 1\n',
        '[tool.diagnose.thresholds]\n"ZZZ999.x" = 1\n',
        '[tool.diagnose.severity]\nLR001 = "fatal"\n',
        '[tool.diagnose.severity]\nLR01 = "info"\n',  # a typo would otherwise change nothing, silently
        '[tool.diagnose]\nslect = ["LR"]\n',
        "[tool.diagnose\n",
    ],
)
def test_a_bad_table_is_one_clear_error(tmp_path: Path, table: str) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(table)
    with pytest.raises(ConfigError) as error:
        load_config(pyproject)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("setting", ["OVF001.min_rise", "OVF001=0.2", "OVF001.min_rise=abc"])
def test_a_bad_command_line_setting_is_one_clear_error(setting: str) -> None:
    with pytest.raises(ConfigError):
        RuleConfig().merged(settings=[setting])
