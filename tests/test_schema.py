"""The run-file schema is the whole contract: every key a real recording writes is declared there,
and every declared key is documented in docs/run-format.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import diagnose
from diagnose.probes.preflight import preflight
from diagnose.probes.preflight.runner import EXPERIMENTS
from diagnose.runfile import schema

DOC = Path(__file__).resolve().parents[1] / "docs" / "run-format.md"
NAN_STEP = 6


def _data(n: int = 32, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 8, generator=generator), torch.randint(0, classes, (n,), generator=generator)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    # Tanh, ReLU and Sigmoid so that every kind of activation statistic is recorded.
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3), nn.Sigmoid())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> list[dict]:
    """A full-preset training run with evaluations, a NaN at one step and an exception at the end,
    and a preflight run: every record either writes."""
    folder = tmp_path_factory.mktemp("schema")
    model, (x, y) = _model(), _data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with (
        pytest.raises(RuntimeError),
        diagnose.watch(
            model, optimizer, folder / "full.jsonl", preset="full", metadata={"task": "multiclass", "num_classes": 3}
        ) as w,
    ):
        for step in range(1, 9):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x * float("nan") if step == NAN_STEP else x), y)
            loss.backward()
            optimizer.step()
            w.log(loss=loss, acc=0.5)
            if step % 2 == 0:
                w.log(val_loss=loss.item(), eval_accuracy=0.4)
        raise RuntimeError("the loop fails after its last step")
    torch.manual_seed(0)
    preflight(
        nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)),
        nn.CrossEntropyLoss(),
        (x, y),
        lambda params: torch.optim.Adam(params, lr=1e-3),
        {"task": "classification", "num_classes": 3},
        path=folder / "preflight.jsonl",
    )
    return [
        json.loads(line)
        for name in ("full", "preflight")
        for line in (folder / f"{name}.jsonl").read_text().splitlines()
    ]


def _of_kind(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r.get("kind") == kind]


def _undeclared(records: list[dict], declared) -> set[str]:
    return {key for record in records for key in record if key != "kind" and key not in declared}


def test_every_record_has_a_declared_kind(recorded):
    assert {r["kind"] for r in recorded} == set(schema.KINDS)


def test_every_meta_step_and_layer_key_is_declared(recorded):
    assert not _undeclared(_of_kind(recorded, schema.META), schema.META_FIELDS)
    assert not _undeclared(_of_kind(recorded, schema.STEP), schema.STEP_FIELDS)
    assert not _undeclared(_of_kind(recorded, schema.LAYER), schema.LAYER_FIELDS)


def test_every_layer_field_and_the_output_module_are_recorded_by_the_full_preset(recorded):
    layers = _of_kind(recorded, schema.LAYER)
    written = {key for record in layers for key in record}
    # written only under torch.distributed (grad_norm_shard: with sharded gradients, tests/test_distributed_sharded.py)
    assert set(schema.LAYER_FIELDS) - written == {"param_checksum", "grad_norm_shard"}
    output = [r for r in layers if r["module"] == schema.OUTPUT_MODULE]
    assert output and {r["type"] for r in output} == {schema.OUTPUT_TYPE}


def test_evaluation_keys_are_declared_or_user_metrics(recorded):
    evals = _of_kind(recorded, schema.EVAL)
    assert {"val_loss", "val_accuracy"} <= {key for record in evals for key in record}
    assert all(key.startswith(schema.EVAL_METRIC_PREFIX) for key in _undeclared(evals, schema.EVAL_FIELDS))


def test_every_event_and_its_keys_and_values_are_declared(recorded):
    events = _of_kind(recorded, schema.EVENT)
    assert {schema.EV_NONFINITE, schema.EV_EXCEPTION, schema.EV_PREFLIGHT} <= {e["event"] for e in events}
    for event in events:
        declared = schema.EVENTS[event["event"]]
        assert not _undeclared([event], (*schema.EVENT_KEYS, *declared.fields)), event
        for key, allowed in declared.values.items():
            assert key not in event or event[key] in allowed, event
    nonfinite = [e for e in events if e["event"] == schema.EV_NONFINITE]
    assert [(e["step"], e["where"]) for e in nonfinite] == [(NAN_STEP, schema.WHERE_FORWARD)]


def test_each_preflight_experiment_writes_the_measurements_declared_for_it(recorded):
    experiments = [e for e in _of_kind(recorded, schema.EVENT) if e["event"] == schema.EV_PREFLIGHT]
    names = [e["experiment"] for e in experiments]
    assert names == [name for name, _ in EXPERIMENTS] == list(schema.PREFLIGHT_EXPERIMENTS)
    for event in experiments:
        measured = set(event) - {*schema.EVENT_KEYS, "experiment", "seconds"}  # seconds: every experiment's time
        assert measured == set(schema.PREFLIGHT_EXPERIMENTS[event["experiment"]]), event["experiment"]


def _declared_names() -> set[str]:
    names = {*schema.META_FIELDS, *schema.STEP_FIELDS, *schema.EVAL_FIELDS, *schema.LAYER_FIELDS}
    names |= {schema.MODEL_MODULE, schema.OUTPUT_MODULE, *schema.EVENTS, *schema.KINDS}
    for event in schema.EVENTS.values():
        names |= {*event.fields, *(value for values in event.values.values() for value in values)}
    return names


def test_every_declared_name_is_in_the_format_document():
    prose = re.sub(r"^```.*?^```", "", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    documented = set(re.findall(r"`([^`\n]+)`", prose))
    missing = sorted(_declared_names() - documented)
    assert not missing, f"declared in diagnose/runfile/schema.py but not in docs/run-format.md: {missing}"
