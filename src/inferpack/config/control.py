"""How models get loaded and unloaded (``--model-control-mode``), and what they may use:
the memory budget and the CPU threads of model compute."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ControlMode(StrEnum):
    NONE = "none"  # load every model at start; no load/unload API
    EXPLICIT = "explicit"  # load/unload only when asked (repository extension)
    LRU = "lru"  # load on first request; evict least recently used idle models over budget


# Requests that may wait for one model's load before more are refused with 429.
DEFAULT_MAX_LOAD_WAITERS = 1024


@dataclass(frozen=True, slots=True)
class ControlConfig:
    mode: ControlMode = ControlMode.NONE
    memory_budget_bytes: int | None = None
    max_load_waiters: int = DEFAULT_MAX_LOAD_WAITERS
    # Loads running at once (Triton: --model-load-thread-count). More threads only contend
    # for the GIL and cores: on 2 cores, 6 parallel loads took 70 ms each, one at a time 6 ms.
    load_threads: int = 2
    startup_models: tuple[str, ...] = ()  # explicit/lru: load these at start
    # Total CPU threads for model compute (worker threads x torch intra-op threads, split
    # by inferpack.runtime.workers.plan_cpu_threads); None: the CPUs this process may use.
    cpu_threads: int | None = None
    # Platforms whose artifacts may be loaded (inferpack.config.trust); None: every platform.
    allowed_platforms: frozenset[str] | None = None
