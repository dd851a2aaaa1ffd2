"""The README stays true: its rules table is the registry, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from diagnose.rules import all_rules

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def rules_table_rows() -> list[str]:
    return [f"| `{r.code}` | {r.name} | {r.severity.value} | {r.category.value} | {r.title} |" for r in all_rules()]


def test_readme_rules_table_lists_every_rule_as_declared() -> None:
    documented = [line for line in README.splitlines() if re.match(r"^\| `[A-Z]+\d{3}` \|", line)]
    assert documented == rules_table_rows()


def test_readme_names_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    assert "make demo" in README and "make test" in README
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_documents_every_cli_command() -> None:
    from diagnose.cli.app import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    for command in commands:
        assert f"diagnose {command}" in README, command
