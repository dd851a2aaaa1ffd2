"""The JSON report against its published schema, with a small validator (jsonschema is not a dependency)."""

from __future__ import annotations

import json
import math

import pytest
from sample_files import scenario_file
from test_report_render import analysis, finding, make_run

import diagnose
from diagnose.report.json_report import render_json
from diagnose.report.schema import JSON_SCHEMA, REPORT_SCHEMA
from diagnose.rules.base import Severity

TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def errors(value, schema, path="$") -> list[str]:
    """What of the schema keywords this project's schema uses ``value`` breaks."""
    found = []
    types = schema.get("type")
    if types is not None and not any(_type_ok(value, t) for t in ([types] if isinstance(types, str) else types)):
        return [f"{path}: {value!r} is not {types}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        found += [f"{path}: missing {key}" for key in schema.get("required", ()) if key not in value]
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                found += errors(item, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{path}: unexpected {key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += errors(item, schema["items"], f"{path}[{index}]")
    return found


def sample() -> list:
    run = make_run("exp", losses=(2.0, 1.0, math.nan), val={2: 1.5})
    return [
        analysis(
            run,
            finding("NF001", onset=3, module="net.2", evidence={"value": math.inf, "ratio": 2.5}),
            finding("SPK001", Severity.WARNING, steps=(1, 2)),
            not_evaluated=[("GRD001", "needs grad_norm")],
        ),
        analysis(make_run("clean")),
    ]


def test_report_validates_against_its_schema():
    document = json.loads(render_json(sample()))
    assert errors(document, JSON_SCHEMA) == []
    assert document["schema"] == REPORT_SCHEMA


def test_content_matches_the_analyses():
    document = json.loads(render_json(sample()))
    first, second = document["runs"]
    assert [f["code"] for f in first["findings"]] == ["NF001", "SPK001"]
    assert first["summary"]["final_loss"] == "NaN" and first["summary"]["best_loss_step"] == 2
    assert first["findings"][0]["evidence"]["value"] == "Infinity"
    assert first["not_evaluated"] == [{"code": "GRD001", "reason": "needs grad_norm"}]
    assert document["verdict"] == {
        "healthy": False,
        "outcome": "problems",
        "not_judged": [],
        "text": document["verdict"]["text"],
        "worst": "NF001",
        "counts": {"error": 1, "warning": 1, "info": 0},
    }
    assert second["verdict"]["healthy"] is True
    assert second["read"]["judged"] is True and second["read"]["train_loss_points"] == 4


def test_a_run_without_a_training_loss_is_not_called_healthy():
    document = json.loads(render_json([analysis(make_run("evals-only", losses=(), val={1: 0.9, 2: 0.8}))]))
    run = document["runs"][0]
    assert errors(document, JSON_SCHEMA) == []
    assert document["verdict"]["healthy"] is False and document["verdict"]["outcome"] == "not_judged"
    assert run["read"]["reason"] == "no training loss among keys: val_loss"
    assert document["verdict"]["not_judged"] == ["run 'evals-only': no training loss among keys: val_loss"]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.pop("runs"),
        lambda d: d.update(schema="diagnose.report/0"),
        lambda d: d["runs"][0]["findings"][0].update(severity="fatal"),
        lambda d: d["runs"][0]["summary"].update(steps="3"),
    ],
)
def test_the_validator_catches_a_broken_report(breakage):
    document = json.loads(render_json(sample()))
    breakage(document)
    assert errors(document, JSON_SCHEMA)


def _property_names(schema) -> set[str]:
    names = set()
    for key, sub in schema.get("properties", {}).items():
        names |= {key} | _property_names(sub)
    if isinstance(schema.get("items"), dict):
        names |= _property_names(schema["items"])
    return names


def test_every_field_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "report-schema.md").read_text()
    assert [name for name in sorted(_property_names(JSON_SCHEMA)) if f"`{name}`" not in doc] == []


def test_a_superseded_finding_is_listed_with_what_superseded_it():
    report = json.loads(render_json([diagnose.analyze(diagnose.load(scenario_file("chance_binary")))]))
    run = report["runs"][0]
    assert errors(report, JSON_SCHEMA) == []
    assert [(f["code"], f["superseded_by"]) for f in run["superseded"]] == [("PLT001", "CH001")]
    chance = next(r for r in run["root_causes"] if r["code"] == "CH001")
    assert chance["supersedes"].startswith("PLT001 ")
    assert "PLT001" not in [f["code"] for f in run["findings"]]


@pytest.mark.parametrize("losses", [(2.0, 0.5, 1.0, 0.5, 0.7), (2.0, float("inf"), 0.5, 1.0, 0.5, float("nan"))])
def test_the_best_loss_is_the_first_of_the_lowest_finite_values(losses: tuple[float, ...]) -> None:
    from diagnose.report.summary import summarize

    summary = summarize(make_run(losses=losses))
    assert (summary.best_loss, summary.best_loss_step) == (0.5, 2 if math.isfinite(losses[1]) else 3)
