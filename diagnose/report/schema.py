"""JSON Schema (draft 2020-12) of the JSON report, version ``diagnose.report/2``.

Documented in docs/report-schema.md. Within a version fields are only ever
added; a removed or retyped field bumps the version.
"""

from __future__ import annotations

from typing import Any

REPORT_SCHEMA = "diagnose.report/2"

# A number in the report: finite numbers as numbers, NaN and infinities as the
# strings "NaN", "Infinity", "-Infinity" (as in run files), null when absent.
_NUMBER = {"type": ["number", "string", "null"]}
_STEP = {"type": ["integer", "null"]}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_SEVERITY = {"enum": ["error", "warning", "info"]}


def _object(properties: dict[str, Any], *, closed: bool = False) -> dict[str, Any]:
    """An object that must hold every listed property."""
    schema: dict[str, Any] = {"type": "object", "required": sorted(properties), "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


_VERDICT = _object(
    {
        "healthy": {"type": "boolean"},
        "outcome": {"enum": ["healthy", "problems", "not_judged"]},
        "not_judged": _STRINGS,
        "text": {"type": "string"},
        "counts": _object({"error": {"type": "integer"}, "warning": {"type": "integer"}, "info": {"type": "integer"}}),
        "worst": {"type": ["string", "null"]},
    }
)

_FINDING = _object(
    {
        "code": {"type": "string"},
        "name": {"type": "string"},
        "title": {"type": "string"},
        "severity": _SEVERITY,
        "category": {"type": "string"},
        "message": {"type": "string"},
        "run": {"type": "string"},
        "onset": _STEP,
        "end": _STEP,
        "steps": {"type": "array", "items": {"type": "integer"}},
        "module": {"type": ["string", "null"]},
        "module_label": {"type": "string"},
        "rank": _STEP,
        "evidence": {"type": "object"},
        "confidence": {"type": "number"},
        "causes": _STRINGS,
        "fixes": _STRINGS,
        "priority": {"type": "integer"},
        "seen_live": _STEP,
        "explained_by": {"type": ["string", "null"]},
        "symptoms": _STRINGS,
    }
)

_ROOT_CAUSE = _object(
    {
        "code": {"type": "string"},
        "title": {"type": "string"},
        "severity": _SEVERITY,
        "confidence": {"type": "number"},
        "symptoms": _STRINGS,
        "supersedes": {"type": "string"},  # the findings it set aside, as one line ("" when none)
    }
)

_SUMMARY = _object(
    {
        "steps": {"type": "integer"},
        "last_step": _STEP,
        "final_loss": _NUMBER,
        "best_loss": _NUMBER,
        "best_loss_step": _STEP,
        "final_val_loss": _NUMBER,
        "best_val_loss": _NUMBER,
        "best_val_step": _STEP,
    }
)

_READ = _object(
    {
        "judged": {"type": "boolean"},
        "reason": {"type": ["string", "null"]},
        "train_loss_points": {"type": "integer"},
        "validation": _STRINGS,
        "evaluations": {"type": "integer"},
        "also": _STRINGS,
        "text": {"type": "string"},
    }
)

_RULE_NOTE = _object({"code": {"type": "string"}, "reason": {"type": "string"}})

_RUN = _object(
    {
        "name": {"type": "string"},
        "source": {"type": "string"},
        "format": {"type": "string"},
        "rank": _STEP,
        "summary": _SUMMARY,
        "read": _READ,
        "verdict": _VERDICT,
        "findings": {"type": "array", "items": _FINDING},
        "root_causes": {"type": "array", "items": _ROOT_CAUSE},
        # Findings set aside because another finding of the run says the same more precisely.
        "superseded": {
            "type": "array",
            "items": {
                **_FINDING,
                "required": [*_FINDING["required"], "superseded_by"],
                "properties": {**_FINDING["properties"], "superseded_by": {"type": "string"}},
            },
        },
        "not_evaluated": {"type": "array", "items": _RULE_NOTE},
        "errors": {"type": "array", "items": _RULE_NOTE},
        "warnings": _STRINGS,
    }
)

JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:diagnose:report:2",
    "title": "diagnose report",
    **_object(
        {
            "schema": {"const": REPORT_SCHEMA},
            "tool": _object({"name": {"const": "diagnose"}, "version": {"type": "string"}}),
            "verdict": _VERDICT,
            "runs": {"type": "array", "items": _RUN},
        }
    ),
}
