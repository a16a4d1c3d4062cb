"""VRAM through NVML: per GPU used/total (memory info v2 where the driver has it), temperature,
and the memory used by the target's processes. Fields NVML does not support are null, never 0."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import psutil

from harness.gpu import nvml
from harness.supervision.samplers.base import Notices, Tick

_UNSUPPORTED_NAMES = (
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
)


class VramSampler:
    """One `vram` row per GPU per tick. Construction raises GpuUnavailable without a usable NVML."""

    source = "vram"

    def __init__(self, notices: Notices | None = None) -> None:
        self._nvml: ModuleType = nvml()
        self._notices = notices or Notices()
        self._handles = [
            self._nvml.nvmlDeviceGetHandleByIndex(index)
            for index in range(self._nvml.nvmlDeviceGetCount())
        ]
        self._unsupported = {
            getattr(self._nvml, name) for name in _UNSUPPORTED_NAMES if hasattr(self._nvml, name)
        }
        self._memory_v2 = hasattr(self._nvml, "nvmlMemory_v2")
        self._has_temperature = True
        self._has_processes = True

    def read(self, tick: Tick) -> list[dict[str, Any]]:
        pids = set(tick.pids)
        rows = []
        for index, handle in enumerate(self._handles):
            try:
                memory = self._memory(handle)
            except self._nvml.NVMLError as exc:
                self._notices.once(f"vram-{index}", f"VRAM: GPU {index} unreadable: {exc}")
                continue
            rows.append(
                {
                    "gpu": index,
                    "used_bytes": int(memory.used),
                    "total_bytes": int(memory.total),
                    "reserved_bytes": _int_or_none(getattr(memory, "reserved", None)),
                    "temperature_c": self._temperature(handle),
                    "process_used_bytes": self._process_used(handle, pids) if pids else None,
                }
            )
        return rows

    def _memory(self, handle: Any) -> Any:
        """v2 first: its `used` excludes driver-reserved memory, which v1 counts as used."""
        if self._memory_v2:
            try:
                return self._nvml.nvmlDeviceGetMemoryInfo(handle, version=self._nvml.nvmlMemory_v2)
            except self._nvml.NVMLError as exc:
                if getattr(exc, "value", None) not in self._unsupported:
                    raise
                self._memory_v2 = False
        return self._nvml.nvmlDeviceGetMemoryInfo(handle)

    def _temperature(self, handle: Any) -> int | None:
        if not self._has_temperature:
            return None
        try:
            return int(self._nvml.nvmlDeviceGetTemperature(handle, self._nvml.NVML_TEMPERATURE_GPU))
        except self._nvml.NVMLError as exc:
            if getattr(exc, "value", None) in self._unsupported:
                self._has_temperature = False
            return None

    def _process_used(self, handle: Any, pids: set[int]) -> int | None:
        """Bytes the target's pids hold on this GPU; None when NVML cannot say (not supported,
        per-process memory not available, or its pids are from a pid namespace we cannot see)."""
        if not self._has_processes:
            return None
        listed: dict[int, int | None] = {}
        try:
            for query in (
                self._nvml.nvmlDeviceGetComputeRunningProcesses,
                self._nvml.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                for process in query(handle):
                    listed[int(process.pid)] = process.usedGpuMemory
        except self._nvml.NVMLError as exc:
            if getattr(exc, "value", None) in self._unsupported:
                self._has_processes = False
            return None
        mine = [used for pid, used in listed.items() if pid in pids]
        if any(used is None for used in mine):
            return None
        if not mine and not all(psutil.pid_exists(pid) for pid in listed):
            return None  # NVML sees host pids (a container): absence proves nothing
        return sum(int(used) for used in mine)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
