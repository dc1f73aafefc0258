"""Worker threads shared by every model on a device.

Model code runs on these threads, never on the event loop. Threads are per device, not per
model: with thousands of models, a thread per model instance costs memory (stacks, malloc
arenas, an OpenMP team per calling thread: 4.4 MB of RSS and 2 threads per small model,
measured) and CPU (idle OpenMP teams spinning). A model's ``instances.count`` bounds how
many of its batches run at once; the device's threads are shared by all models.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

# GPU work is launch- and copy-bound: a few threads per GPU overlap copies and kernels.
DEFAULT_CUDA_THREADS = 4


def default_threads(device: str) -> int:
    if device == "cpu":
        return os.cpu_count() or 1
    return DEFAULT_CUDA_THREADS


class DevicePools:
    def __init__(self, threads: dict[str, int] | None = None) -> None:
        self._threads = threads or {}
        self._pools: dict[str, ThreadPoolExecutor] = {}

    def executor(self, device: str, at_least: int = 1) -> ThreadPoolExecutor:
        """The device's pool (created on first use with max(configured, at_least) threads)."""
        pool = self._pools.get(device)
        if pool is None:
            size = max(self._threads.get(device, default_threads(device)), at_least)
            pool = ThreadPoolExecutor(size, thread_name_prefix=f"worker-{device}")
            self._pools[device] = pool
        return pool

    def shutdown(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()
