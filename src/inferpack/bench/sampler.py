"""Samples CPU (psutil) and GPU (NVML) utilisation on a thread while a measurement runs."""

from __future__ import annotations

import threading
from typing import Any

# 100 ms: fine enough for 10 s runs, cheap enough not to disturb them.
INTERVAL_S = 0.1


class UtilisationSampler:
    def __init__(self, gpu_index: int | None) -> None:
        self._gpu_index = gpu_index
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="utilisation", daemon=True)
        self.cpu_percent: list[float] = []
        self.rss_mb: list[float] = []
        self.gpu_percent: list[float] = []
        self.gpu_memory_mb: list[float] = []

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        process, psutil = _psutil_process()
        nvml, handle = _nvml_handle(self._gpu_index)
        if psutil is not None:
            psutil.cpu_percent(None)
        while not self._stop.wait(INTERVAL_S):
            if psutil is not None and process is not None:
                self.cpu_percent.append(psutil.cpu_percent(None))
                self.rss_mb.append(process.memory_info().rss / 2**20)
            if handle is not None:
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                self.gpu_percent.append(float(rates.gpu))
                self.gpu_memory_mb.append(memory.used / 2**20)

    def summary(self) -> dict[str, float | None]:
        def mean(values: list[float]) -> float | None:
            return round(sum(values) / len(values), 1) if values else None

        return {
            "cpu_percent_mean": mean(self.cpu_percent),
            "rss_mb_max": round(max(self.rss_mb), 1) if self.rss_mb else None,
            "gpu_percent_mean": mean(self.gpu_percent),
            "gpu_memory_mb_max": round(max(self.gpu_memory_mb), 1) if self.gpu_memory_mb else None,
        }


def _psutil_process() -> tuple[Any, Any]:
    try:
        import psutil
    except ImportError:
        return None, None
    return psutil.Process(), psutil


def _nvml_handle(gpu_index: int | None) -> tuple[Any, Any]:
    if gpu_index is None:
        return None, None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
    except Exception:  # no NVML library or driver: utilisation stays unknown
        return None, None
