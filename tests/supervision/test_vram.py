"""VRAM sampling against a fake `pynvml` (no GPU here): values, fallbacks, and honest nulls."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness import gpu
from harness.rundir import RunDir
from harness.supervision.proctree import ProcessTree
from harness.supervision.samplers import Tick, VramSampler, start_sampling

from .helpers import events, samples, wait_for

GiB = 1 << 30
NOT_SUPPORTED, LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND = 3, 12, 13


@dataclass
class _Memory:
    total: int
    used: int
    free: int


@dataclass
class _MemoryV2(_Memory):
    reserved: int


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int | None  # NVML's field name


class _NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def _fake_nvml(
    *,
    count: int = 2,
    init_error: int | None = None,
    v2: bool = True,
    temperature: bool = True,
    processes: list[_Process] | None = None,
    processes_supported: bool = True,
) -> types.ModuleType:
    """A pynvml stand-in with NVML's names, error values and the shapes of its answers."""
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = _NVMLError  # type: ignore[attr-defined]
    nvml.NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED  # type: ignore[attr-defined]
    nvml.NVML_ERROR_LIBRARY_NOT_FOUND = LIBRARY_NOT_FOUND  # type: ignore[attr-defined]
    nvml.NVML_ERROR_DRIVER_NOT_LOADED = 9  # type: ignore[attr-defined]
    nvml.NVML_ERROR_FUNCTION_NOT_FOUND = FUNCTION_NOT_FOUND  # type: ignore[attr-defined]
    nvml.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    nvml.nvmlMemory_v2 = 0x02000028  # type: ignore[attr-defined]

    def init() -> None:
        if init_error is not None:
            raise _NVMLError(init_error)

    def memory(handle: int, version: int | None = None) -> _Memory:
        if version is not None:
            if not v2:
                raise _NVMLError(FUNCTION_NOT_FOUND)
            return _MemoryV2(total=16 * GiB, used=9 * GiB, free=6 * GiB, reserved=GiB)
        return _Memory(total=16 * GiB, used=10 * GiB, free=6 * GiB)

    def temp(handle: int, sensor: int) -> int:
        if not temperature:
            raise _NVMLError(NOT_SUPPORTED)
        return 61 + handle

    def compute(handle: int) -> list[_Process]:
        if not processes_supported:
            raise _NVMLError(NOT_SUPPORTED)
        return list(processes or []) if handle == 0 else []

    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: count  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda handle: b"Fake GPU"  # type: ignore[attr-defined]
    nvml.nvmlSystemGetDriverVersion = lambda: "550.0"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetTemperature = temp  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetComputeRunningProcesses = compute  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetGraphicsRunningProcesses = lambda handle: []  # type: ignore[attr-defined]
    return nvml


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def put(module: types.ModuleType) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", module)
        gpu.reset()

    yield put
    gpu.reset()


def _read(sampler: VramSampler, pid: int | None = os.getpid()) -> list[dict[str, Any]]:
    return sampler.read(Tick(t=0.0, pid=pid, tree=ProcessTree()))


def test_per_gpu_rows_with_v2_memory_and_the_targets_own_use(install: Any) -> None:
    me = os.getpid()
    install(_fake_nvml(processes=[_Process(me, 3 * GiB), _Process(os.getppid(), GiB)]))
    rows = _read(VramSampler())
    assert rows == [
        {
            "gpu": 0,
            "used_bytes": 9 * GiB,  # v2: without the driver's reserved memory
            "total_bytes": 16 * GiB,
            "reserved_bytes": GiB,
            "temperature_c": 61,
            "process_used_bytes": 3 * GiB,
        },
        {
            "gpu": 1,
            "used_bytes": 9 * GiB,
            "total_bytes": 16 * GiB,
            "reserved_bytes": GiB,
            "temperature_c": 62,
            "process_used_bytes": 0,  # every listed pid is visible: the target holds nothing here
        },
    ]


def test_not_supported_paths_give_nulls_never_zeros(install: Any) -> None:
    install(_fake_nvml(count=1, v2=False, temperature=False, processes_supported=False))
    sampler = VramSampler()
    for _ in range(2):  # the second read no longer asks what the first found unsupported
        (row,) = _read(sampler)
        assert row["used_bytes"] == 10 * GiB and row["reserved_bytes"] is None  # v1 fallback
        assert row["temperature_c"] is None and row["process_used_bytes"] is None


def test_per_process_memory_unknown_or_from_another_pid_namespace(install: Any) -> None:
    install(_fake_nvml(count=1, processes=[_Process(os.getpid(), None)]))
    assert _read(VramSampler())[0]["process_used_bytes"] is None  # NVML: not available
    invisible = 4_000_000  # a host pid we cannot see from inside a container
    install(_fake_nvml(count=1, processes=[_Process(invisible, GiB)]))
    assert _read(VramSampler())[0]["process_used_bytes"] is None
    assert _read(VramSampler(), pid=None)[0]["process_used_bytes"] is None  # no target


@pytest.mark.parametrize(
    ("fake", "reason"),
    [
        (_fake_nvml(init_error=LIBRARY_NOT_FOUND), "no NVIDIA driver"),
        (_fake_nvml(count=0), "no NVIDIA GPU found"),
    ],
)
def test_no_driver_or_no_gpu_says_so_once_and_writes_no_rows(
    install: Any, run_dir: RunDir, capsys: pytest.CaptureFixture[str], fake: Any, reason: str
) -> None:
    install(fake)
    loop = start_sampling(run_dir, interval=0.02)
    wait_for(lambda: len(samples(run_dir, "ram")) >= 3, what="3 RAM rows")
    loop.stop()
    assert not samples(run_dir, "vram")
    assert capsys.readouterr().err.count(f"VRAM: unavailable: {reason}") == 1
    assert events(run_dir, "source_unavailable") == [
        {
            "t": events(run_dir)[0]["t"],
            "kind": "source_unavailable",
            "source": "vram",
            "reason": reason,
        }
    ]


def test_vram_rows_in_the_loop(install: Any, run_dir: RunDir) -> None:
    install(_fake_nvml(count=1, processes=[_Process(os.getpid(), 2 * GiB)]))
    loop = start_sampling(run_dir, interval=0.02, pid=os.getpid())
    wait_for(lambda: len(samples(run_dir, "vram")) >= 3, what="3 VRAM rows")
    loop.stop()
    assert {row["process_used_bytes"] for row in samples(run_dir, "vram")} == {2 * GiB}
