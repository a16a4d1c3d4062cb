"""NVIDIA GPUs through NVML (`nvidia-ml-py`, import name `pynvml`), initialised lazily.

No driver, no GPU or no bindings is a normal state here: callers get a reason, never zeros.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any


class GpuUnavailable(Exception):
    """NVML cannot be used; str(exc) is the reason shown as "VRAM: unavailable: <reason>"."""


_lock = threading.Lock()
_state: dict[str, Any] = {}


def nvml() -> ModuleType:
    """The initialised pynvml module, or GpuUnavailable with a plain reason (cached)."""
    with _lock:
        if "module" in _state:
            return _state["module"]
        if "error" in _state:
            raise GpuUnavailable(_state["error"])
        try:
            import pynvml
        except ImportError:
            _state["error"] = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
            raise GpuUnavailable(_state["error"]) from None
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            _state["error"] = _reason(pynvml, exc)
            raise GpuUnavailable(_state["error"]) from None
        if count == 0:
            _state["error"] = "no NVIDIA GPU found"
            raise GpuUnavailable(_state["error"])
        _state["module"] = pynvml
        return pynvml


def reset() -> None:
    """Forget the cached NVML state (tests swap in a fake module)."""
    with _lock:
        _state.clear()


def _reason(pynvml: ModuleType, exc: Exception) -> str:
    lib_missing = getattr(pynvml, "NVML_ERROR_LIBRARY_NOT_FOUND", None)
    driver_missing = getattr(pynvml, "NVML_ERROR_DRIVER_NOT_LOADED", None)
    value = getattr(exc, "value", None)
    if value is not None and value in (lib_missing, driver_missing):
        return "no NVIDIA driver"
    return f"NVML error: {exc}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_inventory() -> dict[str, Any]:
    """Driver and devices for a manifest: {"available": False, "reason": ...} without NVML."""
    try:
        pynvml = nvml()
    except GpuUnavailable as exc:
        return {"available": False, "reason": str(exc)}
    devices = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        devices.append(
            {
                "index": index,
                "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "memory_total_bytes": int(memory.total),
            }
        )
    return {
        "available": True,
        "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
        "devices": devices,
    }
