"""HTML report and plots on hand-made runs and findings."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from sample_files import scenario_file
from test_report_render import analysis, finding, make_run

import diagnose
from diagnose.report.html import render_html
from diagnose.report.plots import PANELS, figure, image_bytes, thin, wants_log
from diagnose.rules.base import Category, Severity
from diagnose.run import Run

NETWORK = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)


def layered_run(name="layers", modules=("enc", "dec")) -> Run:
    run = make_run(name, losses=np.geomspace(5, 0.01, 300))
    steps = np.repeat(np.arange(1, 301, 10, dtype=float), len(modules))
    layers = pd.DataFrame(
        {
            "step": steps,
            "module": list(modules) * (len(steps) // len(modules)),
            "grad_norm": np.linspace(0.01, 1, len(steps)),
            "act_std": 1.0,
        }
    )
    return Run(name=name, steps=run.steps.assign(lr=1e-3, grad_norm=1.0), layers=layers)


class TestPlots:
    def test_thin_keeps_extremes_and_bounds_the_size(self):
        values = pd.Series(np.sin(np.arange(100_000) / 50.0), index=np.arange(100_000))
        values.iloc[12_345] = 99.0
        thinned = thin(values, max_points=1000)
        assert len(thinned) <= 1000 + 100_000 // 500
        assert thinned.max() == 99.0 and thinned.index.is_monotonic_increasing

    def test_thin_drops_non_finite_points(self):
        assert thin(pd.Series([1.0, math.nan, math.inf, 2.0])).tolist() == [1.0, 2.0]

    def test_log_scale_only_for_positive_curves_over_a_decade(self):
        assert wants_log(pd.Series([10.0, 0.5]))
        assert not wants_log(pd.Series([2.0, 0.5]))
        assert not wants_log(pd.Series([10.0, -0.5, 0.001]))

    def test_one_row_per_recorded_panel_kind_and_one_column_per_run(self):
        runs = [analysis(layered_run()), analysis(make_run("bare"))]
        axes = [ax for ax in figure(runs).axes if ax.get_label() != "<colorbar>"]
        recorded = [p for p in PANELS if p.has(runs[0].run)]
        assert len(axes) == 2 * len(recorded)
        assert {p.key for p in recorded} >= {"loss", "lr", "grad_norm", "layer_grad", "layer_act"}

    def test_findings_are_drawn_where_they_happen(self):
        found = analysis(
            layered_run(),
            finding("SPK001", Severity.WARNING, onset=20, end=60, steps=(30, 40)),
            finding("NF001", onset=250, module="dec", category=Category.GRADIENTS, evidence={"best_step": 120}),
        )
        loss_ax = figure([found]).axes[0]
        labels = loss_ax.get_legend_handles_labels()[1]
        assert {"SPK001", "NF001 (dec)", "best_step (NF001)"} <= set(labels)
        assert not loss_ax.texts  # named in the legend, never by text that could overprint a neighbour

    def test_png_bytes(self):
        assert image_bytes(figure([analysis(make_run())])).startswith(b"\x89PNG")


class TestHtml:
    def test_self_contained_with_plots_and_escaped(self):
        name = "<script>alert(1)</script>"
        run = make_run(name)
        text = render_html(
            [analysis(run, finding(run=name, message="a <b>bold</b> & more", fixes=("use <tt>clip</tt>",)))]
        )
        assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "a &lt;b&gt;bold&lt;/b&gt; &amp; more" in text and "&lt;tt&gt;clip" in text
        assert not NETWORK.search(text)
        assert text.count('src="data:image/png;base64,') == 1

    def test_several_runs_table_worst_first(self):
        text = render_html([analysis(make_run("ok")), analysis(make_run("bad"), finding(run="bad"))], plots=False)
        rows = re.findall(r"<tr><td>([^<]*)</td>", text)
        assert rows == ["bad", "ok"] and "data:image" not in text


def test_a_superseded_finding_shows_under_the_one_that_superseded_it():
    page = render_html([diagnose.analyze(diagnose.load(scenario_file("chance_binary")))])
    assert "<b>Supersedes:</b> PLT001 " in page
