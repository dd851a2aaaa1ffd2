"""Text renderers (verdict, terminal, Markdown) on hand-made runs and findings."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from diagnose.report import render
from diagnose.report import summary as s
from diagnose.report.markdown import escape, render_markdown
from diagnose.report.terminal import render_terminal
from diagnose.rules.base import Category, Finding, Severity
from diagnose.rules.engine import Analysis
from diagnose.run import Run

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def make_run(name: str = "exp", losses=(2.0, 1.5, 1.0, 0.8), val=None) -> Run:
    steps = pd.DataFrame({"step": np.arange(1, len(losses) + 1, dtype=float), "loss": np.asarray(losses, float)})
    evals = pd.DataFrame({"step": [float(k) for k in (val or {})], "val_loss": list((val or {}).values())})
    logged_nan = {"loss": steps["step"][steps["loss"].isna()].to_numpy()}
    return Run(name=name, steps=steps, evals=evals, nan_steps=logged_nan)


def finding(code="LR001", severity=Severity.ERROR, run="exp", **kw) -> Finding:
    base = dict(
        code=code,
        name=code.lower() + "-rule",
        title=f"Title of {code}",
        severity=severity,
        category=Category.OPTIMIZATION,
        message=f"message of {code}",
        run=run,
    )
    return Finding(**{**base, **kw})


def analysis(run: Run, *findings: Finding, **kw) -> Analysis:
    return Analysis(run=run, findings=sorted(findings, key=Finding.sort_key), **kw)


class TestSummary:
    def test_final_best_and_best_validation_step(self):
        run = make_run(losses=(3.0, 1.0, 2.0, math.nan), val={2: 1.4, 4: 1.1, 6: 1.3})
        summary = s.summarize(run)
        assert math.isnan(summary.final_loss)
        assert (summary.best_loss, summary.best_loss_step) == (1.0, 2)
        assert (summary.best_val_loss, summary.best_val_step) == (1.1, 4)

    def test_run_without_loss_has_no_numbers(self):
        summary = s.summarize(Run(name="empty"))
        assert summary.final_loss is None and summary.best_val_step is None and summary.steps == 0

    @pytest.mark.parametrize(
        ("kw", "expected"),
        [
            ({"onset": 10, "end": 80}, "steps 10-80"),
            ({"onset": 10}, "from step 10"),
            ({"onset": 7, "end": 7}, "at step 7"),
            ({"steps": (3,)}, "at step 3"),
            ({"steps": tuple(range(1, 10))}, "at steps 1, 2, 3, 4, 5, 6 (+3 more)"),
            ({"onset": 5, "module": "net.0", "rank": 1}, "from step 5, in module net.0, rank 1"),
            ({"onset": 9, "steps": (9,)}, "from step 9"),
            ({}, ""),
        ],
    )
    def test_where(self, kw, expected):
        assert s.where(finding(**kw)) == expected

    def test_verdict_names_the_worst_finding(self):
        run = make_run()
        found = analysis(run, finding("SPK001", Severity.WARNING), finding("NF001", Severity.ERROR, onset=4))
        text = s.verdict([found])
        assert text.startswith("2 problems in run 'exp'")
        assert "worst: NF001 Title of NF001 (error, from step 4)" in text

    def test_notes_alone_leave_a_run_healthy(self):
        found = analysis(make_run(), finding("MEM001", Severity.INFO))
        assert s.is_healthy(found)
        assert s.verdict([found]) == "healthy: no problems found in run 'exp'; read: training loss (4 points); 1 note"

    @pytest.mark.parametrize(
        ("losses", "val", "reason"),
        [
            ((), {1: 0.9, 2: 0.8}, "no training loss among keys: val_loss"),
            ((2.0, 1.5, 1.0), {}, "3 training-loss points: too short to judge"),
        ],
    )
    def test_a_run_with_too_little_to_read_is_not_judged(self, losses, val, reason):
        found = analysis(make_run(losses=losses, val=val))
        assert not s.is_healthy(found) and s.outcome(found) == "not_judged"
        assert s.verdict([found]).startswith(f"not judged: run 'exp': {reason}; read: ")
        assert s.run_row(found)[-1] == "not judged"

    def test_the_verdict_names_validation_metrics_read(self):
        read = s.coverage(make_run(val={2: 1.0, 4: 0.9}))
        assert read.describe() == "training loss (4 points); validation: val_loss (2 evaluations)"

    def test_several_runs_are_ordered_worst_first(self):
        clean = analysis(make_run("clean"))
        warned = analysis(make_run("warned"), finding("SPK001", Severity.WARNING, run="warned"))
        broken = analysis(make_run("broken"), finding("NF001", Severity.ERROR, run="broken"))
        ordered = s.order_runs([clean, warned, broken])
        assert [a.run.name for a in ordered] == ["broken", "warned", "clean"]
        assert s.verdict(ordered).startswith("3 runs: 1 healthy, 2 with problems (1 error, 1 warning)")

    def test_not_evaluated_is_grouped_by_what_is_missing(self):
        missing = [
            ("GRD001", "needs grad_norm"),
            ("GRD002", "needs grad_norm"),
            ("GRD003", "needs grad_norm"),
            ("GRD004", "needs grad_norm"),
            ("ACT001", "needs layers.act_std"),
            ("ACT002", "needs layers.act_std, accuracy"),
        ]
        text = s.not_evaluated(analysis(make_run(), not_evaluated=missing + self.preflight_missing()))
        assert text == (
            "GRD001-GRD004 (4 rules need grad_norm); ACT001 (needs layers.act_std); "
            "ACT002 (needs layers.act_std, accuracy)"
        )

    def test_not_evaluated_spans_only_codes_that_follow_each_other_in_the_code_table(self):
        codes = ["BUG016", "BUG017", "BUG018", "BUG023", "AMP001", "BUG001"]
        missing = [(code, "needs events") for code in codes]
        text = s.not_evaluated(analysis(make_run(), not_evaluated=missing + self.preflight_missing()))
        assert text == "AMP001, BUG001, BUG016-BUG018, BUG023 (6 rules need events)"

    def test_not_evaluated_folds_to_one_line_naming_what_was_missing(self):
        missing = [
            ("GRD001", "needs grad_norm"),
            ("ACT001", "needs layers.act_std"),
            ("OVF002", "needs accuracy"),
            ("MEM001", "needs rss"),
        ]
        text = s.not_evaluated_short(analysis(make_run(), not_evaluated=missing + self.preflight_missing()))
        assert text == "4 rules, for lack of grad_norm, layers.act_std, accuracy and 1 more"

    def test_a_preflight_run_does_not_list_training_rules_and_a_training_run_not_preflight_ones(self):
        training = analysis(make_run(), not_evaluated=[("LR001", "needs loss"), *self.preflight_missing()])
        assert s.not_evaluated(training) == "LR001 (needs loss)"
        some_checks_ran = [("LR001", "needs loss"), *self.preflight_missing()[:2]]
        run = make_run()
        run.events = pd.DataFrame({"step": [0.0], "event": ["preflight"], "experiment": ["labels"]})
        preflight = analysis(run, not_evaluated=some_checks_ran)
        assert s.not_evaluated(preflight) == "PRE001, PRE002 (need preflight)"

    @staticmethod
    def preflight_missing() -> list[tuple[str, str]]:
        from diagnose.rules import Category, all_rules

        return [(r.code, f"needs preflight.{r.name}") for r in all_rules() if r.category is Category.PREFLIGHT]

    def test_numbers(self):
        assert [s.number(v) for v in (math.nan, math.inf, -math.inf, 3, 0.123456, None, True)] == [
            "NaN",
            "inf",
            "-inf",
            "3",
            "0.1235",
            "-",
            "true",
        ]
        assert s.number({"fc1": 0.123456, "fc2": [1, 2.0]}) == "{fc1: 0.1235, fc2: [1, 2]}"


class TestTerminal:
    def full(self) -> Analysis:
        return analysis(
            make_run(val={2: 1.6, 4: 1.2}),
            finding("SPK001", Severity.WARNING, steps=(40, 90), evidence={"spikes": 2, "max_ratio": 4.56789}),
            finding("LR001", onset=10, end=80, causes=("learning rate too high",), fixes=("divide the lr by 10",)),
            not_evaluated=[("GRD001", "needs grad_norm")],
            errors=[("ACT001", "ValueError: boom (x.py:1)")],
        )

    def test_verdict_first_then_findings_worst_first(self):
        text = render_terminal([self.full()])
        lines = text.splitlines()
        assert lines[0].startswith("2 problems in run 'exp'")
        assert text.index("LR001") < text.index("SPK001", text.index("LR001"))
        for needle in (
            "steps 10-80",
            "at steps 40, 90",
            "max_ratio=4.568",
            "learning rate too high",
            "divide the lr by 10",
            "lowest validation loss 1.2 at step 4",
        ):
            assert needle in text

    def test_not_evaluated_and_rule_errors_are_listed(self):
        text = render_terminal([self.full()])
        assert "not evaluated: 1 rule, for lack of grad_norm (--show-skipped lists them)" in text
        assert "not evaluated: GRD001 (needs grad_norm)" in render_terminal([self.full()], show_skipped=True)
        assert "rule error: ACT001 failed: ValueError: boom" in text

    def test_colour_only_when_asked(self):
        assert not ANSI.search(render_terminal([self.full()]))
        assert ANSI.search(render_terminal([self.full()], color=True))

    def test_width_is_respected_without_trailing_blanks(self):
        text = render_terminal([self.full()], width=50)
        assert max(len(line) for line in text.splitlines()) <= 50
        assert all(line == line.rstrip() for line in text.splitlines())

    def test_table_never_hides_a_finding_count(self):
        runs = [
            analysis(make_run("a-rather-long-run-name")),
            analysis(
                make_run("b"),
                finding("NF001", run="b"),
                finding("SPK001", Severity.WARNING, run="b"),
                finding("MEM001", Severity.INFO, run="b"),
            ),
        ]
        lines = [line for line in render_terminal(runs, width=60).splitlines() if "\u2502" in line]
        last_column = " ".join(line.split("\u2502")[-1].strip() for line in lines)
        assert "1 error, 1 warning, 1 info" in " ".join(last_column.split())

    def test_markup_in_a_run_name_prints_as_written(self):
        run = make_run("[bold]x[/bold]")
        text = render_terminal([analysis(run, finding(run=run.name))])
        assert "'[bold]x[/bold]'" in text

    def test_several_runs_get_a_table_worst_first(self):
        clean = analysis(make_run("clean-run"))
        broken = analysis(make_run("broken-run", losses=(2.0, math.nan)), finding("NF001", run="broken-run"))
        text = render_terminal([clean, broken], width=120)
        table_rows = [line for line in text.splitlines() if line.startswith(("clean-run", "broken-run"))]
        assert [row.split()[0] for row in table_rows] == ["broken-run", "clean-run"]
        assert "NaN" in table_rows[0]


class TestMarkdown:
    def test_escapes_names_and_messages(self):
        run = make_run("<script>alert(1)</script>|x")
        text = render_markdown([analysis(run, finding(run=run.name, message="*loud* <b>"))])
        assert "<script>" not in text and "<b>" not in text
        assert r"\<script\>" in text and r"\*loud\*" in text

    def test_table_for_several_runs_has_one_row_each(self):
        runs = [analysis(make_run(f"r{i}")) for i in range(3)]
        text = render_markdown(runs)
        assert len([line for line in text.splitlines() if line.startswith("| r") and "steps" not in line]) == 3

    def test_escape_keeps_plain_text(self):
        assert escape("loss rose 3x\nat step 5") == "loss rose 3x at step 5"

    def test_render_dispatches_and_rejects_unknown_formats(self):
        found = [analysis(make_run())]
        assert render(found, "md") == render_markdown(found)
        with pytest.raises(ValueError, match="unknown report format"):
            render(found, "pdf")
