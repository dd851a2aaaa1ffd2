"""Hostile text in a run (run name, module name, metric key) through every output format: nothing
reaches a terminal as a control sequence, no printed line can be a GitHub workflow command, and
HTML, Markdown, JUnit and JSON stay well-formed (issue 12)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from matplotlib.text import Text
from typer.testing import CliRunner

import diagnose
from diagnose.cli.app import app
from diagnose.escaping import neutralise_workflow_command, plain_in_figure, visible
from diagnose.report.plots import figure, image_bytes

PAYLOADS = {
    "ansi": "\x1b[2J\x1b[Hcleared",
    "osc-title": "\x1b]0;pwned\x07title",
    "c1": "\x9b31mred\x85next",
    "workflow-error": "run\n::error file=x.py,line=1::injected",
    "add-mask": "run\r\n::add-mask::secret",
    "bidi": "safe\u202etxt.exe",
    "html": "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "xml": "</testcase><testcase name='fake'/>&amp;",
    "markdown": "| a | b |\n# heading *bold* [link](http://x) `code`",
    "tex-math": "loss $\\alpha_{x$ and $y$",
}
# What must never reach a terminal raw: C0 but newline, DEL, C1, bidirectional overrides.
_RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def hostile_run(folder: Path, payload: str) -> Path:
    """A run named ``payload`` whose NaN is made by a module named ``payload``, logging a key named ``payload``."""
    path = folder / "run.jsonl"
    records = [{"kind": "meta", "schema": "diagnose.run/1", "name": payload}]
    records += [
        {"kind": "step", "step": i, "loss": 2.0 / i if i < 20 else "NaN", "grad_norm": 1.0, payload: 0.5}
        for i in range(1, 31)
    ]
    records += [
        {"kind": "layer", "step": i, "module": payload, "type": "Linear", "grad_norm": 1.0 / i} for i in range(1, 31, 5)
    ]
    records.append(
        {
            "kind": "event",
            "step": 20,
            "event": "nonfinite",
            "where": "forward",
            "module": payload,
            "type": "Linear",
            "detail": payload,
        }
    )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def strings(value: object) -> set[str]:
    if isinstance(value, dict):
        return set().union(*map(strings, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(strings, value)) if value else set()
    return {value} if isinstance(value, str) else set()


def invoke(*args: object, env: dict[str, str] | None = None):
    result = CliRunner(env={"COLUMNS": "100", **(env or {})}).invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def assert_terminal_safe(text: str, *, annotations: bool = False) -> None:
    assert not _RAW_CONTROL.search(text), repr(text)
    for line in text.splitlines():
        if line.lstrip().startswith("::"):
            assert annotations and re.match(r"::(error|warning|notice) title=", line), line


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_terminal_report_and_check_print_no_control_sequence_or_workflow_command(tmp_path: Path, name: str) -> None:
    path = hostile_run(tmp_path, PAYLOADS[name])
    report = invoke("report", path)
    assert report.exit_code == 0
    assert_terminal_safe(report.output)
    check = invoke("check", path, "--junit", tmp_path / "junit.xml", env={"GITHUB_ACTIONS": "true"})
    assert check.exit_code == 1  # the NaN fails the check
    assert_terminal_safe(check.output, annotations=True)
    annotation_lines = [line for line in check.stdout.splitlines() if line.startswith("::")]
    assert annotation_lines and all("\n" not in line for line in annotation_lines)
    suites = ET.parse(tmp_path / "junit.xml").getroot().findall("testsuite")  # well-formed whatever the name
    assert len(suites) == 1 and suites[0].findall("testcase/failure")


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_markdown_html_and_json_hold_the_payload_as_text(tmp_path: Path, name: str) -> None:
    payload = PAYLOADS[name]
    path = hostile_run(tmp_path, payload)
    markdown = invoke("report", "-f", "md", path, env={"GITHUB_ACTIONS": "true"}).stdout
    assert_terminal_safe(markdown)
    assert "<script" not in markdown.replace("\\<script", "") and "\n# heading" not in markdown
    page = invoke("report", "-f", "html", path).stdout
    assert not _RAW_CONTROL.search(page)
    assert "<script>" not in page and "<img src=x" not in page and "<testcase" not in page
    document = json.loads(invoke("report", "-f", "json", path).stdout)
    assert payload in strings(document)  # JSON keeps the exact text; its own escaping makes it safe


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_figure_draws_the_payload_as_literal_text(
    tmp_path: Path, name: str, recwarn: pytest.WarningsRecorder
) -> None:
    path = hostile_run(tmp_path, PAYLOADS[name])
    plot = invoke("plot", path, "-o", tmp_path / "run.png")
    assert plot.exit_code == 0, plot.output
    assert (tmp_path / "run.png").read_bytes().startswith(b"\x89PNG")
    drawn = figure([diagnose.analyze(diagnose.load(path))])
    image_bytes(drawn)
    texts = {text.get_text() for text in drawn.findobj(Text)}
    assert plain_in_figure(PAYLOADS[name]) in texts  # the run's title, literally
    assert not [w for w in recwarn if "missing from font" in str(w.message)]


def test_an_error_line_naming_a_hostile_path_stays_one_plain_line(tmp_path: Path) -> None:
    result = invoke("report", tmp_path / "\x1b]0;t\x07\n::error::x.jsonl", env={"GITHUB_ACTIONS": "true"})
    assert result.exit_code == 2
    assert_terminal_safe(result.stderr)
    assert result.stderr.count("\n") == 1


def test_the_escapes_themselves() -> None:
    assert visible("a\x1b[2Jb\x9b\u202e\n") == "a\\x1b[2Jb\\x9b\\u202e\\x0a"
    assert (
        plain_in_figure("a $x$ \\$y \x1b")
        == "a \\$x\\$ \\$y \\x1b"
        == plain_in_figure(plain_in_figure("a $x$ \\$y \x1b"))
    )
    assert neutralise_workflow_command("  ::add-mask::x") == "\\  ::add-mask::x"
    assert neutralise_workflow_command("\x1b[1m::error::x") == "\\\x1b[1m::error::x"
    assert neutralise_workflow_command("run a: ::error::") == "run a: ::error::"
