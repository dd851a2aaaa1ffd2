"""Probes declare what they put on the record and what they read of other probes; the watch orders them
from that, every declared name is part of the run-file schema or a shared record value, and no probe
reads another probe's private data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from probe_models import mlp

import diagnose
from diagnose.probes import base
from diagnose.probes.amp import GradScalerProbe
from diagnose.probes.base import Probe, dependency_order
from diagnose.probes.gradients import GradientProbe
from diagnose.probes.nonfinite import NonFiniteProbe
from diagnose.probes.presets import Schedule
from diagnose.probes.record import SHARED_VALUES
from diagnose.runfile import schema

PROBES_DIR = Path(base.__file__).parent


def _probe_classes() -> list[type[Probe]]:
    found, pending = [], [Probe]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub.__module__.startswith("diagnose.probes."):
                found.append(sub)
            pending.append(sub)
    return found


class _Named(Probe):
    def __init__(self, name: str, provides: tuple[str, ...] = (), needs: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.name, self.provides, self.needs = name, provides, needs


def test_providers_come_first_and_the_rest_keeps_its_order():
    a, b = _Named("a", needs=("x", "y")), _Named("b", provides=("y",))
    c, d = _Named("c"), _Named("d", provides=("x",), needs=("nobody-provides-this",))
    assert [p.name for p in dependency_order([a, b, c, d])] == ["b", "c", "d", "a"]


def test_probes_that_need_each_other_are_refused():
    with pytest.raises(ValueError, match="need each other"):
        dependency_order([_Named("a", ("x",), ("y",)), _Named("b", ("y",), ("x",))])


def test_the_non_finite_probe_runs_after_the_probes_whose_values_it_reads():
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    probes = [NonFiniteProbe(per_module=True), GradScalerProbe(scaler, Schedule(1)), GradientProbe(Schedule(1))]
    ordered = [type(p) for p in dependency_order(probes)]
    assert ordered.index(NonFiniteProbe) > max(ordered.index(GradientProbe), ordered.index(GradScalerProbe))


def test_the_watch_attaches_its_probes_in_dependency_order(tmp_path):
    model = mlp()
    with diagnose.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path / "run.jsonl", preset="full") as w:
        names = [p.name for p in w._probes]
    assert names.index("nonfinite") > names.index("gradients")


@pytest.mark.parametrize("probe", _probe_classes(), ids=lambda p: p.__name__)
def test_every_declared_name_is_a_schema_field_or_a_shared_value(probe):
    for name in (*probe.provides, *probe.needs):
        field = name.removeprefix("layers.")
        declared = schema.LAYER_FIELDS if name.startswith("layers.") else schema.STEP_FIELDS
        assert name in SHARED_VALUES or field in declared, f"{probe.__name__}: {name}"


_PRIVATE_WRITE = re.compile(r"private\[\"(\w+)\"\]\s*=|private\.setdefault\(\"(\w+)\"")
_PRIVATE_READ = re.compile(r"private(?:\[\"(\w+)\"\]|\.get\(\"(\w+)\")")


@pytest.mark.parametrize("path", sorted(PROBES_DIR.glob("*.py")), ids=lambda p: p.name)
def test_a_probe_reads_only_the_private_data_it_writes(path):
    text = path.read_text(encoding="utf-8")
    written = {a or b for a, b in _PRIVATE_WRITE.findall(text)}
    read = {a or b for a, b in _PRIVATE_READ.findall(text)}
    assert read <= written, f"{path.name} reads private data another module writes: {sorted(read - written)}"
