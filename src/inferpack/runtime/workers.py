"""Worker threads shared by every model on a device, and how CPU threads are split.

Model code runs on these threads, never on the event loop. Threads are per device, not per
model: with thousands of models, a thread per model instance costs memory (stacks, malloc
arenas, an OpenMP team per calling thread: 4.4 MB of RSS and 2 threads per small model,
measured) and CPU (idle OpenMP teams spinning). A model's ``instances.count`` bounds how
many of its batches run at once; the device's threads are shared by all models.

CPU threads. Every thread that runs a torch op gets its own OpenMP team of intra-op
threads, so W worker threads each with a team of T run W x T threads at once. torch's
default T is every core; with W = cores (the old pool size) a 64-core host ran 4,096
threads on 64 cores. The server is given a total, ``--cpu-threads N`` (default: the CPUs
this process may run on), and splits it::

    W = ceil(sqrt(N))     worker threads: batches that run at once, across all models
    T = max(1, N // W)    intra-op threads of each batch; W x T <= N

The trade-off: many small models and light batches want W = N, T = 1 (concurrency); one
large model wants W = 1, T = N (each batch parallel). The square root splits evenly
between the two (2 -> 2 x 1, 4 -> 2 x 2, 16 -> 4 x 4, 64 -> 8 x 8). torch's setting is
process-wide and read per thread: each worker sets it when it starts (see
:func:`inferpack.backends.threads.set_intra_op_threads`), and threads started later inherit it.
A model asking for more instances than W grows its device's pool at creation, beyond N.

T is then chosen again for every batch, from the batches running now (:class:`CpuShare`):

    running = batches computing on the device's workers, this one included
    T       = max(1, N // running), set on the worker's thread when it differs from the
              last value that thread used

so one model alone (one instance, one batch at a time) computes on all N threads instead of
N / W, and W batches at once get N / W each, as before. The cost: a batch keeps the T it
started with, so one that started alone still holds N threads while a second starts with
N / 2 (at most 1.5 N threads until the first ends), never the W x N of torch's default.

Only a batch with work to split is widened: each model keeps its measured compute per row
(one thread's milliseconds, a moving average) and a batch whose rows add up to less than
WIDE_BATCH_MS runs on one thread. Measured on the 2-core VM: tiny-mlp's 8- to 32-row
batches (16 us) ran no faster on 2 threads, and the second OpenMP thread then spins after
every op (the process at 2 cores of CPU where it was at 1), taking the core the event loop
needs: tiny-mlp over HTTP fell 15-25 % at concurrency 8 with every batch widened. A passive
OpenMP wait (OMP_WAIT_POLICY=PASSIVE) instead costs ~100 us a parallel region: the CNN's
8-image batch took 5.5 ms on 2 threads against 3.9 with the default spin.

Loader threads run torch too (deserialisation, weight copies) and would keep a team of
every core each for their whole life; they get N // (loads at once) instead
(:meth:`DevicePools.loading_thread`), which brought the server's threads at rest after the
1,000-model LRU benchmark from 11 back to 9 on the 2-core VM.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from inferpack.backends.python.calls import ModelCalls
from inferpack.backends.threads import set_intra_op_threads

log = logging.getLogger(__name__)
# GPU work is launch- and copy-bound: a few threads per GPU overlap copies and kernels.
DEFAULT_CUDA_THREADS = 4
# A batch whose rows add up to less single-thread compute than this runs on one thread
# (module docstring): splitting it gains less than the spinning OpenMP team costs.
WIDE_BATCH_MS = 0.5


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def fleet_cpu_threads(servers: int, cores: int | None = None) -> int:
    """Each local fleet server's --cpu-threads when none is given: the host's cores less one
    for the router (which proxies every request), split evenly, at least one each. Without
    this every server sized itself for the whole machine and N servers and the router
    oversubscribed it N-fold. (Here, below deploy and profile, because both start fleets.)"""
    if cores is None:
        cores = available_cpus()
    return max(1, (cores - 1) // max(servers, 1))


@dataclass(frozen=True, slots=True)
class CpuThreads:
    """How ``total`` CPU threads are split: ``workers`` batches at once, each ``intra_op``."""

    total: int
    workers: int
    intra_op: int


def plan_cpu_threads(total: int) -> CpuThreads:
    """Split ``total`` threads into W workers x T intra-op threads (module docstring)."""
    if total < 1:
        raise ValueError(f"cpu threads must be at least 1, got {total}")
    workers = math.ceil(math.sqrt(total))
    return CpuThreads(total, workers, max(1, total // workers))


def _start_worker(intra_op: int) -> None:
    """Runs first on every worker thread: the thread's torch intra-op team size."""
    applied = set_intra_op_threads(intra_op)
    if applied is not None:
        log.debug("%s: torch intra-op threads %d", threading.current_thread().name, applied)


class CpuShare:
    """The device's N CPU threads split among the batches computing now (module docstring)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._running = 0
        self._lock = threading.Lock()
        self._thread = threading.local()  # the T each worker thread last set

    @property
    def running(self) -> int:
        return self._running

    @contextmanager
    def batch(self, wide: bool = True) -> Iterator[int]:
        """Around one batch's compute, on its worker thread: yields the T it runs with.
        A batch that is not ``wide`` (too little work to split) runs on one thread, and
        still counts as running."""
        with self._lock:
            self._running += 1
            threads = max(1, self.total // self._running) if wide else 1
        try:
            if getattr(self._thread, "threads", None) != threads:
                set_intra_op_threads(threads)
                self._thread.threads = threads
            yield threads
        finally:
            with self._lock:
                self._running -= 1


class DevicePools:
    """One thread pool per device, created on first use; ``cpu_threads`` is the total N."""

    def __init__(self, cpu_threads: int | None = None) -> None:
        self.cpu = plan_cpu_threads(cpu_threads or available_cpus())
        self.cpu_share = CpuShare(self.cpu.total)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._processing: ThreadPoolExecutor | None = None
        self._loader_state = threading.local()  # per loader thread: its intra-op threads
        # The server's models as python models call them (BLS); set by the engine.
        self.calls: ModelCalls | None = None

    def _threads(self, device: str) -> int:
        return self.cpu.workers if device == "cpu" else DEFAULT_CUDA_THREADS

    def executor(self, device: str, at_least: int = 1) -> ThreadPoolExecutor:
        """The device's pool (created on first use with max(planned, at_least) threads)."""
        pool = self._pools.get(device)
        if pool is None:
            size = max(self._threads(device), at_least)
            pool = ThreadPoolExecutor(
                size,
                thread_name_prefix=f"worker-{device}",
                initializer=_start_worker,
                initargs=(self.cpu.intra_op,),
            )
            self._pools[device] = pool
            log.info(
                "%s: %d worker threads x %d torch intra-op threads (cpu threads %d)",
                device,
                size,
                self.cpu.intra_op,
                self.cpu.total,
            )
        return pool

    def loading_thread(self, loaders: int, torch_model: bool) -> None:
        """Runs on a loader thread before each load: its torch intra-op threads are the N
        split among the ``loaders`` loads that may run at once (at least one).

        A load runs torch ops (TorchScript's deserialisation, weight copies), and a thread's
        first parallel op gives it an OpenMP team of torch's process-wide count (every core
        unless a batch set less), which stays for the thread's life: on the 2-core VM the two
        loaders kept a team of 2 each, 2 of the server's 11 threads at rest after an LRU run
        (9 with this). Loads that run at once on all cores each also oversubscribe the host.
        Set once per thread, and only where torch is loaded or this load will load it."""
        if getattr(self._loader_state, "threads", None) is not None:
            return
        if not torch_model and "torch" not in sys.modules:
            return
        self._loader_state.threads = set_intra_op_threads(max(1, self.cpu.total // loaders))

    def processing(self) -> ThreadPoolExecutor:
        """The pool that decodes uploads and post-processes answers (Pillow, tokenizers and
        numpy release the GIL), one thread per CPU thread: separate from the model workers so
        that decoding the next requests overlaps the batch running now."""
        if self._processing is None:
            self._processing = ThreadPoolExecutor(self.cpu.total, thread_name_prefix="processing")
        return self._processing

    def shutdown(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()
        if self._processing is not None:
            self._processing.shutdown(wait=True)
            self._processing = None
