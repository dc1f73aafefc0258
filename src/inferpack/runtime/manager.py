"""The model manager: which models exist, their state, loading, unloading and LRU eviction.

States follow the repository extension: READY, LOADING, UNAVAILABLE (with a reason). Every
load runs in a worker thread, never on the event loop, and at most one load per model runs
at a time: concurrent requests for a model being loaded wait on the same load (a bounded
number of them; more get 429).

Under ``lru`` a request loads its model; a load makes room under the memory budget first::

    load(m):                                  # one task per model, shared by its callers
        sources = repository.sources(m)                       # loader thread
        loop:                                                  # bookkeeping: no await
            victims = plan_room(entries, budget, estimate(m))  # see residency.plan_room
            if victims is None: wait until a model goes idle or a load ends; continue
            m.reserved = estimate(m)      # its shared weights pinned: no eviction frees them
            for v in victims: v READY -> UNAVAILABLE "evicted", versions detached
            break
        await close(victims)              # drain (empty) batchers, free backends
        load each version                                      # loader thread
        m READY (reserved -> measured); evict again if the measurement exceeds the estimate

Guarantees. Plan, reservation and eviction run between two awaits, so on the event loop
they are atomic: no lock is needed and no other load sees a half-made decision (the
re-check after waking is the loop above). Eviction never waits: victims are idle, so their
close only stops a batcher with nothing queued. A load waits only for loader threads and
for room, and room comes when requests end or loads finish; requests never wait for room
while holding a model, so no cycle of waits exists. Bytes held (READY measured and loads
reserved, each shared weight once) stay within the budget unless one model alone exceeds
it, or a measurement exceeds its estimate (the first load estimates by artifact size, not
knowing which weights it will share; later ones by the last measurement). A shared weight
counts while any READY model or load holds it, as it stays resident while any holds it:
where estimates are exact, bytes held equal bytes resident (a property test checks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from inferpack.backends import TORCH_PLATFORMS
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.config.model_config import ModelConfig
from inferpack.config.trust import refuse_unless_allowed
from inferpack.errors import InferpackError, NotFoundError, OverloadedError, UnavailableError
from inferpack.repository import ModelSource, Repository
from inferpack.repository.local import versions_to_serve
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.residency import (
    EVICTED,
    NOT_LOADED,
    SHUTTING_DOWN,
    Footprint,
    ModelEntry,
    ModelState,
    held_bytes,
    measure_footprint,
    plan_room,
)
from inferpack.runtime.served_model import ServedModel
from inferpack.runtime.workers import DevicePools

log = logging.getLogger(__name__)
# A request reloads its model at most this often if it is evicted again before its turn
# (it cannot be while the request waits on the load: waiters pin it; this is a backstop).
LRU_LOAD_ATTEMPTS = 3
# Seconds close() lets loads in flight finish before cancelling them: a small model loads
# in milliseconds and ResNet-50 from local disk in about a second.
SHUTDOWN_LOAD_WAIT_S = 5.0

ModelLoader = Callable[[ModelSource, ServingMetrics, DevicePools], ServedModel]


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """What metadata needs without loading: the config and the versions that would serve."""

    config: ModelConfig
    versions: tuple[str, ...]


class ModelManager:
    def __init__(
        self,
        repository: Repository,
        metrics: ServingMetrics,
        control: ControlConfig,
        model_loader: ModelLoader = ServedModel.load,
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.control = control
        self.entries: dict[str, ModelEntry] = {}
        self.pools = DevicePools(control.cpu_threads)
        self._loader = ThreadPoolExecutor(control.load_threads, thread_name_prefix="loader")
        self._load_model = model_loader
        self._descriptions: dict[str, ModelDescription] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # A load measured more than its estimate and no model was idle to evict: trim again
        # when one goes idle (a python model's file says little of what it will hold).
        self._over_budget = False
        self._room_changed = asyncio.Event()
        self._shutting_down = False
        # Startup models (explicit, lru) not READY since the start: the server is not ready
        # while one is left. Leaves once loaded (a later eviction is normal) or unloaded.
        self._startup_pending = set(control.startup_models)

    async def start(self) -> None:
        """Discover the repository; load everything (none) or the startup models."""
        await self.refresh()
        names = list(self.entries) if self.control.mode is ControlMode.NONE else []
        for name in names or self.control.startup_models:
            await self.load(name)

    async def refresh(self) -> None:
        """Pick up models added to the repository since the last look; forget cached configs."""
        self._descriptions.clear()
        for name in await asyncio.to_thread(self.repository.model_names):
            self.entries.setdefault(name, ModelEntry(name))

    def entry(self, name: str) -> ModelEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise NotFoundError(f"Request for unknown model: '{name}' is not found")
        return entry

    async def describe(self, name: str) -> ModelDescription:
        """Config and versions of ``name``: the loaded ones if READY, else the repository's
        (read once and cached until the next refresh). Never loads the model."""
        if name not in self.entries:
            await self.refresh()
        entry = self.entry(name)
        if entry.state is ModelState.READY:
            return ModelDescription(entry.latest().config, tuple(sorted(entry.versions, key=int)))
        description = self._descriptions.get(name)
        if description is None:
            description = await asyncio.to_thread(self._read_description, name)
            self._descriptions[name] = description
        return description

    def _read_description(self, name: str) -> ModelDescription:
        config = self.repository.config(name)
        versions = versions_to_serve(config, self.repository.versions(name), name)
        return ModelDescription(config, tuple(versions))

    async def load(self, name: str) -> ModelEntry:
        """Load ``name`` unless it is READY; concurrent callers share one load."""
        if name not in self.entries:
            await self.refresh()
        entry = self.entry(name)
        await self._join_load(entry)
        return entry

    async def _join_load(self, entry: ModelEntry) -> str | None:
        """Start the entry's load unless READY or loading, wait for it: None or the reason
        it failed. The load is shielded: a caller giving up does not cancel it."""
        self._check_open()
        if entry.state is ModelState.READY:
            return None
        if entry.loading is None:
            entry.state, entry.reason = ModelState.LOADING, ""
            entry.loading = asyncio.create_task(self._load(entry), name=f"load:{entry.name}")
        return await asyncio.shield(entry.loading)

    async def _load(self, entry: ModelEntry) -> str | None:
        """The load task: None once READY (room made), else the reason it failed. The
        entry stays pinned (``loading`` set, so not evictable) until room is made."""
        self.metrics.loads.labels(entry.name).inc()
        started = time.perf_counter()
        try:
            failure = await self._load_versions(entry)
            if failure is None:
                self.metrics.record_load(time.perf_counter() - started)
                log.info("model %s ready (%d bytes)", entry.name, entry.measured_bytes)
                # READY now: if close() gives up waiting meanwhile, it closes this model;
                # the load must still end as a success for the requests waiting on it.
                with contextlib.suppress(asyncio.CancelledError):
                    await self._trim()
            return failure
        finally:
            entry.reserved = None
            entry.loading = None
            self._room_freed()

    def _load_source(self, source: ModelSource) -> ServedModel:
        """On a loader thread: the thread's share of the CPU threads, then the load."""
        torch_model = source.config.platform in TORCH_PLATFORMS
        self.pools.loading_thread(self.control.load_threads, torch_model)
        return self._load_model(source, self.metrics, self.pools)

    async def _load_versions(self, entry: ModelEntry) -> str | None:
        versions: dict[str, ServedModel] = {}
        try:
            loop = asyncio.get_running_loop()
            if (allowed := self.control.allowed_platforms) is not None:  # before any artifact
                config = await loop.run_in_executor(
                    self._loader, self.repository.config, entry.name
                )
                refuse_unless_allowed(entry.name, config.platform, allowed)
            sources = await loop.run_in_executor(self._loader, self.repository.sources, entry.name)
            await self._reserve(entry, entry.measured or Footprint(_artifact_bytes(sources)))
            for source in sources:
                # Cancelled here (shutdown), the thread finishes alone and its model, never
                # started, is garbage: nothing else refers to it.
                versions[source.version] = await loop.run_in_executor(
                    self._loader, self._load_source, source
                )
                versions[source.version].start()
        except (Exception, asyncio.CancelledError) as error:  # a broken model must not
            return await self._load_failed(entry, versions, error)  # take the server down
        entry.versions, entry.reserved = versions, None
        entry.measured_bytes = entry.memory_bytes
        entry.measured = measure_footprint(versions.values())
        entry.state, entry.reason = ModelState.READY, ""
        entry.last_used_s = time.monotonic()
        self._startup_pending.discard(entry.name)
        return None

    async def _load_failed(
        self, entry: ModelEntry, versions: dict[str, ServedModel], error: BaseException
    ) -> str:
        """Free what was loaded; the entry turns UNAVAILABLE with the reason, returned.
        Cancellation (only close() cancels a load) ends the load as a failure too, so that
        requests waiting on it get 503, not a cancelled request."""
        if isinstance(error, asyncio.CancelledError):
            reason = SHUTTING_DOWN
        elif isinstance(error, InferpackError):
            reason = error.message
        else:
            reason = repr(error)
            log.error("loading model %s failed", entry.name, exc_info=error)
        await asyncio.shield(self._close_later(list(versions.values())))
        entry.state, entry.reason = ModelState.UNAVAILABLE, reason
        log.error("model %s unavailable: %s", entry.name, reason)
        return reason

    async def _reserve(self, entry: ModelEntry, estimate: Footprint) -> None:
        """Wait until ``estimate`` fits (evicting idle models), then hold it: its own bytes
        and its shared weights, pinned (the load leases them: evicting a READY model that
        holds them too must not count them as freed)."""
        budget = self.control.memory_budget_bytes
        if self.control.mode is not ControlMode.LRU or budget is None:
            return
        while True:
            self._check_open()
            entries = self.entries.values()
            victims = plan_room(entries, budget, estimate.own_bytes, estimate.shared)
            if victims is not None:
                break
            await self._room_changed.wait()  # re-checked above: another load may win
        entry.reserved = estimate
        await self._evict(victims)

    async def _trim(self) -> None:
        """After a load: evict idle models if the measurement exceeded the estimate."""
        budget = self.control.memory_budget_bytes
        if self.control.mode is ControlMode.LRU and budget is not None:
            victims = plan_room(self.entries.values(), budget, 0)
            ready = sum(1 for e in self.entries.values() if e.state is ModelState.READY)
            if victims and len(victims) >= ready:  # the last model stays, even one larger
                victims = []  # than the budget (plan_room loads such a model alone)
            self._over_budget = victims is None
            if victims is None:
                log.warning("memory budget exceeded and no idle model to evict (yet)")
            await self._evict(victims or [])

    async def _evict(self, victims: Iterable[ModelEntry]) -> None:
        """Detach every victim now (synchronously), then wait for their closes."""
        closes = []
        for victim in victims:
            self.metrics.record_eviction()
            log.info("evicting model %s (%d bytes)", victim.name, victim.memory_bytes)
            closes.append(self._close_later(self._detach(victim, EVICTED), victim))
        if closes:
            await asyncio.shield(asyncio.gather(*closes))

    def _detach(self, entry: ModelEntry, reason: str) -> list[ServedModel]:
        """READY -> UNAVAILABLE with ``reason``; the versions, for the caller to close."""
        versions, entry.versions = list(entry.versions.values()), {}
        entry.state, entry.reason = ModelState.UNAVAILABLE, reason
        self._room_freed()
        return versions

    def _close_later(
        self, versions: list[ServedModel], entry: ModelEntry | None = None
    ) -> asyncio.Task[None]:
        """Close ``versions`` (drain their batchers, free backends) in a tracked task. Then
        drop ``entry``'s metric series (an unloaded model costs nothing in /metrics), not
        before: requests being drained still update them."""

        async def close() -> None:
            for model in versions:
                try:
                    await model.close()
                except Exception:  # the model is detached either way; loads must go on
                    log.exception("closing model %s failed", model.config.name)
            if entry is not None and entry.state is ModelState.UNAVAILABLE and not entry.loading:
                self.metrics.forget(entry.name)

        task = asyncio.create_task(close(), name="close-versions")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    def _trim_soon(self) -> None:
        """Trim in a tracked task (close() waits for it), one at a time."""
        self._over_budget = False  # set again by the trim if it cannot make room
        task = asyncio.create_task(self._trim(), name="trim")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _room_freed(self) -> None:
        """Wake loads waiting for room (they re-check; a new Event for the next wait)."""
        self._room_changed.set()
        self._room_changed = asyncio.Event()

    def _check_open(self) -> None:
        if self._shutting_down:
            raise UnavailableError(SHUTTING_DOWN)

    async def unload(self, name: str, reason: str = NOT_LOADED) -> None:
        """Stop taking requests for ``name``, let queued and running ones finish, free it.
        A model being loaded is unloaded once its load ends (explicit mode only: eviction
        never waits for a load)."""
        entry = self.entry(name)
        self._startup_pending.discard(name)  # the operator no longer wants it served
        if entry.loading is not None:
            await asyncio.shield(entry.loading)
        if entry.state is ModelState.READY:
            # Shielded: a caller that goes away (its client disconnected) must not cut the
            # close short, leaving the model's requests failed and its backend open.
            await asyncio.shield(self._close_later(self._detach(entry, reason), entry))

    def used_bytes(self) -> int:
        """Bytes held: measured READY models (each shared weight once) plus reservations
        of loads in flight."""
        return held_bytes(self.entries.values())

    @asynccontextmanager
    async def use(self, name: str, version: str | None) -> AsyncIterator[ServedModel]:
        """The model to serve one request, counted in flight (never evicted meanwhile).
        Under lru it is loaded first; a failed load is 503 with the load's reason."""
        entry = self.entry(name)
        if self.control.mode is ControlMode.LRU:
            await self._ensure_loaded(entry)
        model = self._version(entry, version)  # no await from here to inflight += 1
        entry.inflight += 1
        entry.last_used_s = time.monotonic()
        try:
            yield model
        finally:
            entry.inflight -= 1
            if entry.inflight == 0:
                self._room_freed()
                if self._over_budget and not self._shutting_down:
                    self._trim_soon()

    async def _ensure_loaded(self, entry: ModelEntry) -> None:
        for _ in range(LRU_LOAD_ATTEMPTS):
            if entry.state is ModelState.READY:
                return
            failure = await self._load_for_request(entry)
            if failure is not None:
                raise UnavailableError(f"model {entry.name!r} failed to load: {failure}")
        # Evicted before our turn every time: _version reports the state.

    async def _load_for_request(self, entry: ModelEntry) -> str | None:
        if entry.waiters >= self.control.max_load_waiters:
            raise OverloadedError(
                f"model {entry.name!r} is loading and {entry.waiters} requests already wait"
            )
        entry.waiters += 1
        try:
            return await self._join_load(entry)
        finally:
            entry.waiters -= 1
            if entry.waiters == 0:
                self._room_freed()

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """A loaded model version, for readiness and statistics (no load is triggered)."""
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
        """Every model that should be loaded is READY: all of them (none), or every startup
        model (explicit, lru: the others load and unload on demand). A startup model that
        failed to load keeps the server not ready until it loads or is unloaded."""
        if self.control.mode is not ControlMode.NONE:
            return not self._startup_pending
        return all(e.state is ModelState.READY for e in self.entries.values())

    async def close(self) -> None:
        """Refuse new loads (503), let loads in flight end (bounded, then cancel them), make
        every model UNAVAILABLE and close it, draining its requests; then stop the threads."""
        self._shutting_down = True
        self._room_freed()  # loads waiting for room fail with SHUTTING_DOWN
        loads = [e.loading for e in self.entries.values() if e.loading is not None]
        if loads:
            _, pending = await asyncio.wait(loads, timeout=SHUTDOWN_LOAD_WAIT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for entry in self.entries.values():
            if entry.state is ModelState.READY:
                self._close_later(self._detach(entry, SHUTTING_DOWN))
        await asyncio.gather(*self._closing, return_exceptions=True)
        await asyncio.to_thread(self.pools.shutdown)
        self._loader.shutdown(wait=False)


def _artifact_bytes(sources: list[ModelSource]) -> int:
    """A first load's estimate: its artifacts' size (weights as stored)."""
    return sum(source.artifact_path.stat().st_size for source in sources)
