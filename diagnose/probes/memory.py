"""Process and device memory: RSS always, CUDA allocator counters on a GPU, NVML when present."""

from __future__ import annotations

import os
import resource
import sys
from typing import Any

import torch

from diagnose.probes.base import Probe
from diagnose.probes.presets import Schedule
from diagnose.probes.record import StepRecord

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """Current resident set size; the peak where /proc is not available (macOS)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


class MemoryProbe(Probe):
    """RSS and, for a model on CUDA, the caching allocator's counters (host-side reads, no sync)."""

    name = "memory"
    provides = ("rss", "cuda_allocated", "cuda_reserved", "cuda_peak", "cuda_total")

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self._cuda: torch.device | None = None

    def attach(self, host: Any) -> None:
        super().attach(host)
        device = model_device(host.model)
        self._cuda = device if device.type == "cuda" else None

    def finish(self, record: StepRecord) -> None:
        if not self.schedule.due(record.step, self.host.first_step):
            return
        record.fields["rss"] = resident_bytes()
        if self._cuda is not None:
            record.fields["cuda_allocated"] = torch.cuda.memory_allocated(self._cuda)
            record.fields["cuda_reserved"] = torch.cuda.memory_reserved(self._cuda)
            record.fields["cuda_peak"] = torch.cuda.max_memory_allocated(self._cuda)
            record.fields["cuda_total"] = torch.cuda.get_device_properties(self._cuda).total_memory


class NvmlProbe(Probe):
    """Device memory and utilisation as the driver sees them (all processes), through pynvml."""

    name = "nvml"
    provides = ("gpu_mem_used", "gpu_mem_total", "gpu_util")

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self._nvml: Any = None
        self._handle: Any = None

    @staticmethod
    def available_for(model: torch.nn.Module) -> bool:
        return model_device(model).type == "cuda"

    def attach(self, host: Any) -> None:
        super().attach(host)
        import pynvml  # from the nvidia-ml-py package

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = self._device_handle(pynvml, model_device(host.model))

    @staticmethod
    def _device_handle(pynvml: Any, device: torch.device) -> Any:
        # CUDA_VISIBLE_DEVICES renumbers devices for torch but not for NVML;
        # the UUID names the same physical GPU in both.
        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def finish(self, record: StepRecord) -> None:
        if not self.schedule.due(record.step, self.host.first_step):
            return
        memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        record.fields["gpu_mem_used"] = int(memory.used)
        record.fields["gpu_mem_total"] = int(memory.total)
        record.fields["gpu_util"] = float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
