"""The JSON report (schema ``diagnose.report/2``, see diagnose/report/schema.py).

Non-finite numbers are spelled as in run files ("NaN", "Infinity",
"-Infinity") so the output is strict JSON that any parser reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from diagnose import __version__
from diagnose.report import summary as s
from diagnose.report.schema import REPORT_SCHEMA
from diagnose.rules.base import Finding, Severity
from diagnose.rules.engine import Analysis
from diagnose.runfile.schema import encode


def render_json(analyses: Sequence[Analysis]) -> str:
    return json.dumps(report_dict(analyses), indent=2, allow_nan=False, default=_plain) + "\n"


def _plain(value: Any) -> Any:
    """numpy scalars and other odd evidence values, as JSON can hold them."""
    return value.item() if hasattr(value, "item") else str(value)


def report_dict(analyses: Sequence[Analysis]) -> dict[str, Any]:
    ordered = s.order_runs(analyses)
    every = [f for a in ordered for f in a.findings]
    return {
        "schema": REPORT_SCHEMA,
        "tool": {"name": "diagnose", "version": __version__},
        "verdict": _verdict(ordered, every),
        "runs": [_run(a) for a in ordered],
    }


def _verdict(analyses: Sequence[Analysis], findings: Sequence[Finding]) -> dict[str, Any]:
    worst = s.worst_finding(analyses)
    outcomes = [s.outcome(a) for a in analyses]
    reasons = [f"run '{a.run.name}': {s.coverage(a.run).reason}" for a in analyses if s.outcome(a) == "not_judged"]
    return {
        "healthy": all(o == "healthy" for o in outcomes),
        "outcome": next((o for o in ("problems", "not_judged") if o in outcomes), "healthy"),
        "not_judged": reasons,
        "text": s.verdict(analyses),
        "counts": {sev.value: sum(1 for f in findings if f.severity is sev) for sev in Severity},
        "worst": worst.code if worst else None,
    }


def _read(read: s.Coverage) -> dict[str, Any]:
    return {
        "judged": read.judged,
        "reason": read.reason,
        "train_loss_points": read.train_points,
        "validation": list(read.validation),
        "evaluations": read.evaluations,
        "also": list(read.probes),
        "text": read.describe(),
    }


def _run(analysis: Analysis) -> dict[str, Any]:
    run = analysis.run
    return {
        "name": run.name,
        "source": run.source,
        "format": run.format,
        "rank": run.rank,
        "summary": encode(asdict(s.summarize(run))),
        "read": _read(s.coverage(run)),
        "verdict": _verdict([analysis], analysis.findings),
        "findings": [encode(f.to_dict()) for f in analysis.findings],
        "root_causes": [
            {
                "code": root.code,
                "title": root.title,
                "severity": root.severity.value,
                "confidence": root.confidence,
                "symptoms": [f.code for f in symptoms],
                "supersedes": s.supersedes_text(analysis, root, symptoms),
            }
            for root, symptoms in analysis.root_causes
        ],
        "superseded": [{**encode(f.to_dict()), "superseded_by": code} for f, code in analysis.superseded],
        "not_evaluated": [{"code": code, "reason": reason} for code, reason in analysis.not_evaluated],
        "errors": [{"code": code, "reason": error} for code, error in analysis.errors],
        "warnings": list(run.warnings),
    }
