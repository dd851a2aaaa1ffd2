"""`diagnose plot` and `diagnose report --format html` on recorded runs."""

from __future__ import annotations

import re

import pytest
from test_report_html import NETWORK
from typer.testing import CliRunner

from diagnose.cli.app import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_plot_writes_the_figure(runs, test_rule, tmp_path, suffix, magic):
    out = tmp_path / f"curves{suffix}"
    result = invoke("plot", runs["broken"], runs["healthy"], "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic)
    assert result.stdout == ""


def test_plot_refuses_an_unknown_image_type_and_an_input_as_output(runs, tmp_path):
    for out in (tmp_path / "curves.gif", runs["healthy"]):
        before = runs["healthy"].read_bytes()
        result = invoke("plot", runs["healthy"], "-o", out)
        assert result.exit_code == 2 and result.stderr.startswith("diagnose: error: ")
        assert runs["healthy"].read_bytes() == before


def test_html_report_is_self_contained_and_escapes_run_names(runs, test_rule, tmp_path):
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text('{"kind": "meta", "name": "<script>alert(1)</script>"}\n' + runs["broken"].read_text())
    out = tmp_path / "report.html"
    result = invoke("report", hostile, runs["healthy"], "--format", "html", "-o", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert not NETWORK.search(text)
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)) == 2
    assert test_rule.code in text
