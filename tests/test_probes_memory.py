"""Memory probes. No GPU here: the CUDA allocator and NVML are replaced by fakes
that return known figures, so the wiring from driver to run file is what is tested."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from probe_models import mlp, train

import diagnose
from diagnose.probes import memory
from diagnose.probes.memory import MemoryProbe, NvmlProbe, resident_bytes
from diagnose.probes.presets import Schedule
from diagnose.probes.record import StepRecord

GIB = 1 << 30


class FakeHost:
    def __init__(self) -> None:
        self.model = mlp()
        self.first_step = 1


@pytest.fixture
def fake_gpu(monkeypatch):
    """A model 'on cuda:0' whose allocator and NVML report fixed figures."""
    monkeypatch.setattr(memory, "model_device", lambda model: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 3 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 4 * GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5 * GIB)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda index: types.SimpleNamespace(total_memory=80 * GIB, uuid="1234-abcd"),
    )
    handles = {}
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None
    fake.nvmlDeviceGetHandleByUUID = lambda uuid: handles.setdefault("uuid", uuid)
    fake.nvmlDeviceGetHandleByIndex = lambda index: pytest.fail("the UUID names the device")
    fake.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=70 * GIB, total=80 * GIB)
    fake.nvmlDeviceGetUtilizationRates = lambda handle: types.SimpleNamespace(gpu=93)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return handles


def test_cuda_allocator_and_nvml_figures_reach_the_record(fake_gpu) -> None:
    host = FakeHost()
    probes = [MemoryProbe(Schedule(1)), NvmlProbe(Schedule(1))]
    record = StepRecord(1)
    for probe in probes:
        probe.attach(host)
        probe.finish(record)
    assert fake_gpu["uuid"] == "GPU-1234-abcd"  # CUDA_VISIBLE_DEVICES-proof: matched by UUID
    assert record.fields["cuda_allocated"] == 3 * GIB and record.fields["cuda_reserved"] == 4 * GIB
    assert record.fields["cuda_peak"] == 5 * GIB and record.fields["cuda_total"] == 80 * GIB
    assert record.fields["gpu_mem_used"] == 70 * GIB and record.fields["gpu_util"] == 93.0
    assert record.fields["rss"] > 0


def test_memory_is_sampled_on_its_schedule(fake_gpu) -> None:
    host = FakeHost()
    probe = MemoryProbe(Schedule(10))
    probe.attach(host)
    sampled = []
    for step in range(1, 31):
        record = StepRecord(step)
        probe.finish(record)
        if "cuda_allocated" in record.fields:
            sampled.append(step)
    assert sampled == [1, 10, 20, 30]


def test_without_a_driver_the_nvml_probe_stands_aside(tmp_path: Path, monkeypatch) -> None:
    broken = types.ModuleType("pynvml")

    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    broken.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    monkeypatch.setattr(NvmlProbe, "available_for", staticmethod(lambda model: True))
    path = tmp_path / "run.jsonl"
    train(path, mlp(), steps=4)
    run = diagnose.load(path)
    errors = run.events[run.events["event"] == "probe_error"]
    assert errors["probe"].tolist() == ["nvml"] and "NVML" in errors["error"].iloc[0]
    assert run.series("loss").size == 4 and run.series("rss").size >= 1


def test_resident_memory_follows_an_allocation() -> None:
    before = resident_bytes()
    block = torch.ones(64 * (1 << 20) // 4)  # 64 MiB, touched
    assert resident_bytes() - before > 32 * (1 << 20)
    del block
