"""GitHub Actions workflow annotations (``::error title=...::message``) of a verdict's findings.

Escaping follows GitHub's workflow-command rules: in the message ``%``, CR and
LF become ``%25``, ``%0D``, ``%0A``; in a property value ``:`` and ``,``
also become ``%3A`` and ``%2C``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diagnose.escaping import visible
from diagnose.report.summary import where
from diagnose.rules.base import Finding, Severity

if TYPE_CHECKING:
    from diagnose.verdict import Verdict

LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    """Also every other control character shown as an escape: the runner prints the message."""
    return visible(str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(level: str, title: str, message: str) -> str:
    return f"::{level} title={escape_property(title)}::{escape_data(message)}"


def annotations(result: Verdict) -> list[str]:
    """One workflow command per finding (every severity) and per unmet expectation."""
    lines = [_finding(f) for analysis in result.analyses for f in analysis.findings]
    lines += [
        command("error", f"diagnose: expected {e.label} (run {e.run})", e.failure or "")
        for e in result.failed_expectations
    ]
    lines += [
        command("warning", f"diagnose: run {a.run.name} not judged", result.unjudged_text())
        for a in result.unjudged[:1]
    ]
    return lines


def _finding(finding: Finding) -> str:
    title = f"diagnose {finding.code} {finding.title} (run {finding.run})"
    parts = [finding.message, where(finding)] + [f"What to do: {fix}" for fix in finding.fixes]
    return command(LEVELS[finding.severity], title, "\n".join(p for p in parts if p))
