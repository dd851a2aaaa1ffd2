"""JUnit XML for CI test tabs: one test suite a run, one test case a rule evaluated on it.

A finding at or above the verdict's threshold is a ``<failure>``, a rule that
crashed an ``<error>``; each stated expectation is a test case of its own.
Text goes through ElementTree (escaped) after characters XML cannot hold at
all are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from diagnose.report.summary import coverage, describe, where
from diagnose.rules.base import Finding, Rule
from diagnose.rules.engine import Analysis

if TYPE_CHECKING:
    from diagnose.verdict import Expectation, Verdict

_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: str) -> str:
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", str(text))


def render_junit(result: Verdict) -> str:
    root = ET.Element("testsuites", name="diagnose")
    for analysis in result.analyses:
        root.append(_suite(result, analysis))
    _count(root, root.findall("testsuite/testcase"))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(result: Verdict, analysis: Analysis) -> ET.Element:
    suite = ET.Element("testsuite", name=clean(analysis.run.name))
    failing = result.failing(analysis)
    errors = dict(analysis.errors)
    for rule in result.evaluated(analysis):
        findings = [f for f in analysis.findings if f.code == rule.code]
        suite.append(_rule_case(analysis, rule, [f for f in findings if f in failing], errors.get(rule.code)))
    for expectation in result.expectations:
        if expectation.run == analysis.run.name:
            suite.append(_expectation_case(analysis, expectation))
    if result.require != "nothing":
        suite.append(_requirement_case(result, analysis))
    _count(suite, suite.findall("testcase"))
    return suite


def _case(analysis: Analysis, name: str) -> ET.Element:
    return ET.Element("testcase", classname=clean(f"diagnose.{analysis.run.name}"), name=clean(name))


def _rule_case(analysis: Analysis, rule: type[Rule], failing: list[Finding], error: str | None) -> ET.Element:
    case = _case(analysis, f"{rule.code} {rule.name}")
    if error is not None:
        ET.SubElement(case, "error", message=clean(f"rule {rule.code} failed"), type="rule-error").text = clean(error)
    for finding in failing:
        failure = ET.SubElement(case, "failure", message=clean(describe(finding)), type=finding.severity.value)
        failure.text = clean(_finding_text(finding))
    return case


def _finding_text(finding: Finding) -> str:
    lines = [finding.message]
    if where(finding):
        lines.append("where: " + where(finding))
    lines += [f"likely cause: {c}" for c in finding.causes] + [f"what to do: {f}" for f in finding.fixes]
    return "\n".join(lines)


def _expectation_case(analysis: Analysis, expectation: Expectation) -> ET.Element:
    case = _case(analysis, f"expect {expectation.label}")
    if expectation.failure:
        ET.SubElement(case, "failure", message=clean(expectation.failure), type="expectation")
    return case


def _requirement_case(result: Verdict, analysis: Analysis) -> ET.Element:
    case = _case(analysis, f"require {result.require}")
    if analysis in result.unjudged:
        ET.SubElement(case, "failure", message=clean(f"not judged: {coverage(analysis.run).reason}"), type="not-judged")
    return case


def _count(element: ET.Element, cases: list[ET.Element]) -> None:
    element.set("tests", str(len(cases)))
    element.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    element.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
