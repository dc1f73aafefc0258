"""The model manager: which models exist, their state, loading, unloading and LRU eviction.

States follow the repository extension: READY, LOADING, UNAVAILABLE (with a reason).
Every load runs in a worker thread, never on the event loop, and at most one load per
model runs at a time: concurrent requests for a model being loaded wait on the same load
(a bounded number of them; more get 429). Under ``lru`` a request loads its model, and
least recently used idle models (no request in flight) are unloaded while the loaded
models' measured memory would exceed the budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from inferpack.config.control import ControlConfig, ControlMode
from inferpack.errors import InferpackError, NotFoundError, OverloadedError, UnavailableError
from inferpack.repository import Repository
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.served_model import ServedModel
from inferpack.runtime.workers import DevicePools

log = logging.getLogger(__name__)
NOT_LOADED = "unloaded"
LRU_LOAD_ATTEMPTS = 3
EVICTED = "evicted (least recently used)"


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class ModelEntry:
    name: str
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = NOT_LOADED
    versions: dict[str, ServedModel] = field(default_factory=dict)
    loading: asyncio.Task[None] | None = None
    waiters: int = 0
    inflight: int = 0
    last_used_s: float = 0.0

    @property
    def memory_bytes(self) -> int:
        return sum(model.memory_bytes for model in self.versions.values())

    def latest(self) -> ServedModel:
        return self.versions[max(self.versions, key=int)]


class ModelManager:
    def __init__(
        self, repository: Repository, metrics: ServingMetrics, control: ControlConfig
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.control = control
        self.entries: dict[str, ModelEntry] = {}
        self.pools = DevicePools()
        self._loader = ThreadPoolExecutor(control.load_threads, thread_name_prefix="loader")

    async def start(self) -> None:
        """Discover the repository; load everything (none) or the startup models."""
        await self.refresh()
        names = list(self.entries) if self.control.mode is ControlMode.NONE else []
        for name in names or self.control.startup_models:
            await self.load(name)

    async def refresh(self) -> None:
        """Pick up models added to the repository since the last look."""
        for name in await asyncio.to_thread(self.repository.model_names):
            self.entries.setdefault(name, ModelEntry(name))

    def entry(self, name: str) -> ModelEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise NotFoundError(f"unknown model {name!r}")
        return entry

    async def load(self, name: str) -> ModelEntry:
        """Load ``name`` unless it is READY; concurrent callers share one load."""
        if name not in self.entries:
            await self.refresh()
        entry = self.entry(name)
        if entry.loading is None and entry.state is not ModelState.READY:
            entry.loading = asyncio.create_task(self._load(entry), name=f"load:{name}")
        if entry.loading is not None:
            await asyncio.shield(entry.loading)
        return entry

    async def _load(self, entry: ModelEntry) -> None:
        entry.state, entry.reason = ModelState.LOADING, ""
        self.metrics.loads.labels(entry.name).inc()
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            sources = await loop.run_in_executor(self._loader, self.repository.sources, entry.name)
            if self.control.mode is ControlMode.LRU:
                estimate = sum(source.artifact_path.stat().st_size for source in sources)
                await self._make_room(estimate, keep=entry)
            for source in sources:
                model = await loop.run_in_executor(
                    self._loader, ServedModel.load, source, self.metrics, self.pools
                )
                model.start()
                entry.versions[source.version] = model
        except Exception as error:  # a broken model must not take the server down
            reason = error.message if isinstance(error, InferpackError) else repr(error)
            if not isinstance(error, InferpackError):
                log.exception("loading model %s failed", entry.name)
            await self._close_versions(entry)
            entry.state, entry.reason = ModelState.UNAVAILABLE, reason
            log.error("model %s unavailable: %s", entry.name, reason)
        else:
            entry.state, entry.last_used_s = ModelState.READY, time.monotonic()
            self.metrics.load_s.labels(entry.name).observe(time.perf_counter() - started)
            log.info("model %s ready (%d bytes)", entry.name, entry.memory_bytes)
            if self.control.mode is ControlMode.LRU:
                await self._make_room(0, keep=entry)
        finally:
            entry.loading = None

    async def unload(self, name: str, reason: str = NOT_LOADED) -> None:
        """Stop taking requests for ``name``, let queued and running ones finish, free it."""
        entry = self.entry(name)
        if entry.loading is not None:
            await asyncio.shield(entry.loading)
        if entry.state is ModelState.READY:
            entry.state, entry.reason = ModelState.UNAVAILABLE, reason
            await self._close_versions(entry)

    async def _close_versions(self, entry: ModelEntry) -> None:
        versions, entry.versions = list(entry.versions.values()), {}
        for model in versions:
            await model.close()

    def used_bytes(self) -> int:
        return sum(e.memory_bytes for e in self.entries.values() if e.state is ModelState.READY)

    async def _make_room(self, needed_bytes: int, keep: ModelEntry) -> None:
        budget = self.control.memory_budget_bytes
        if budget is None:
            return
        while self.used_bytes() + needed_bytes > budget:
            idle = [
                e
                for e in self.entries.values()
                if e is not keep and e.state is ModelState.READY and e.inflight == 0
            ]
            if not idle:
                log.warning("memory budget exceeded and no idle model to evict")
                return
            victim = min(idle, key=lambda e: e.last_used_s)
            self.metrics.evictions.labels(victim.name).inc()
            await self.unload(victim.name, reason=EVICTED)

    @asynccontextmanager
    async def use(self, name: str, version: str | None) -> AsyncIterator[ServedModel]:
        """The model to serve one request, counted in flight (never evicted meanwhile)."""
        entry = self.entry(name)
        # Under LRU another load may evict this model between its load and our turn to run:
        # load again (a bounded number of times) rather than fail the request.
        for attempt in range(LRU_LOAD_ATTEMPTS):
            if entry.state is ModelState.READY or self.control.mode is not ControlMode.LRU:
                break
            if attempt and entry.reason != EVICTED:
                break  # the load itself failed: answer with its reason
            await self._load_for_request(entry)
        model = self._version(entry, version)
        entry.inflight += 1
        entry.last_used_s = time.monotonic()
        try:
            yield model
        finally:
            entry.inflight -= 1

    async def _load_for_request(self, entry: ModelEntry) -> None:
        if entry.waiters >= self.control.max_load_waiters:
            raise OverloadedError(
                f"model {entry.name!r} is loading and {entry.waiters} requests already wait"
            )
        entry.waiters += 1
        try:
            await self.load(entry.name)
        finally:
            entry.waiters -= 1

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """A loaded model version, for metadata and readiness (no load is triggered)."""
        return self._version(self.entry(name), version)

    @staticmethod
    def _version(entry: ModelEntry, version: str | None) -> ServedModel:
        if entry.state is not ModelState.READY:
            reason = f": {entry.reason}" if entry.reason else ""
            raise UnavailableError(f"model {entry.name!r} is {entry.state.value.lower()}{reason}")
        if not version:
            return entry.latest()
        model = entry.versions.get(version)
        if model is None:
            available = ", ".join(entry.versions)
            raise NotFoundError(
                f"model {entry.name!r} has no version {version!r} (available: {available})"
            )
        return model

    def all_ready(self) -> bool:
        """Every model that should be loaded is READY (none: all of them)."""
        if self.control.mode is not ControlMode.NONE:
            return True  # models load and unload on demand; the server itself is ready
        return all(e.state is ModelState.READY for e in self.entries.values())

    async def close(self) -> None:
        for entry in self.entries.values():
            await self._close_versions(entry)
        await asyncio.to_thread(self.pools.shutdown)
        self._loader.shutdown(wait=False)
