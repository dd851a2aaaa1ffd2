"""CI outputs: GitHub workflow annotations and JUnit XML, escaping included."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from test_report_render import analysis, finding, make_run

from diagnose.report.ci_annotations import annotations, escape_data, escape_property
from diagnose.report.junit import render_junit
from diagnose.rules.base import Severity
from diagnose.verdict import Expectation, evaluate


def test_github_escaping_rules():
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("a: b, c%") == "a%3A b%2C c%25"


def test_one_annotation_per_finding_with_its_level():
    run = make_run("r")
    found = analysis(
        run,
        finding("NF001", run="r", message="loss is NaN: 100%"),
        finding("SPK001", Severity.WARNING, run="r"),
        finding("MEM001", Severity.INFO, run="r"),
    )
    lines = annotations(evaluate([found]))
    assert [line.split(" ", 1)[0] for line in lines] == ["::error", "::warning", "::notice"]
    assert lines[0].endswith("::loss is NaN: 100%25")


def test_unmet_expectations_are_annotated():
    result = evaluate([analysis(make_run("r"))])
    result.expectations.append(Expectation("final loss below 0.1", "r", "final loss is 0.8"))
    assert annotations(result) == ["::error title=diagnose%3A expected final loss below 0.1 (run r)::final loss is 0.8"]


def test_junit_escapes_names_and_drops_characters_xml_cannot_hold(test_rule):
    name = '<script>alert("x")</script>&\x00'
    run = make_run(name)
    result = evaluate([analysis(run, finding(test_rule.code, run=name, message="a < b & \x1b[31m"))])
    root = ET.fromstring(render_junit(result).encode("utf-8"))
    suite = root.find("testsuite")
    assert suite.get("name") == '<script>alert("x")</script>&\N{REPLACEMENT CHARACTER}'
    failure = suite.find(f"testcase[@name='{test_rule.code} {test_rule.name}']/failure")
    assert failure.text.startswith("a < b & \N{REPLACEMENT CHARACTER}[31m")
    assert root.get("failures") == suite.get("failures") == "1"
