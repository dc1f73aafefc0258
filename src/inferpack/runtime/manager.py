"""The model manager: which models exist, their state, and their loaded versions.

States follow the repository extension: READY, LOADING, UNAVAILABLE (with a reason).
Loading runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import StrEnum

from inferpack.errors import InferpackError, NotFoundError, UnavailableError
from inferpack.repository import LocalRepository
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.served_model import ServedModel

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class ModelEntry:
    name: str
    state: ModelState = ModelState.LOADING
    reason: str = ""
    versions: dict[str, ServedModel] = field(default_factory=dict)

    def latest(self) -> ServedModel:
        return self.versions[max(self.versions, key=int)]


class ModelManager:
    def __init__(self, repository: LocalRepository, metrics: ServingMetrics) -> None:
        self.repository = repository
        self.metrics = metrics
        self.entries: dict[str, ModelEntry] = {}

    async def load_all(self) -> None:
        for name in self.repository.model_names():
            await self.load(name)

    async def load(self, name: str) -> ModelEntry:
        entry = self.entries.setdefault(name, ModelEntry(name))
        entry.state = ModelState.LOADING
        self.metrics.loads.labels(name).inc()
        try:
            sources = await asyncio.to_thread(self.repository.sources, name)
            for source in sources:
                model = await asyncio.to_thread(ServedModel.load, source, self.metrics)
                model.start()
                entry.versions[source.version] = model
        except InferpackError as error:
            self._fail(entry, error.message)
        except Exception as error:  # a broken artifact must not take the server down
            log.exception("loading model %s failed", name)
            self._fail(entry, f"{type(error).__name__}: {error}")
        else:
            entry.state, entry.reason = ModelState.READY, ""
            log.info("model %s ready (versions %s)", name, ", ".join(entry.versions))
        return entry

    def _fail(self, entry: ModelEntry, reason: str) -> None:
        entry.state, entry.reason = ModelState.UNAVAILABLE, reason
        log.error("model %s unavailable: %s", entry.name, reason)

    async def close(self) -> None:
        for entry in self.entries.values():
            for model in entry.versions.values():
                await model.close()
            entry.versions.clear()

    def entry(self, name: str) -> ModelEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise NotFoundError(f"unknown model {name!r}")
        return entry

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model to serve a request; NotFound for unknown names or versions."""
        entry = self.entry(name)
        if entry.state is not ModelState.READY:
            reason = f": {entry.reason}" if entry.reason else ""
            raise UnavailableError(f"model {name!r} is {entry.state.value.lower()}{reason}")
        if version is None or version == "":
            return entry.latest()
        model = entry.versions.get(version)
        if model is None:
            available = ", ".join(entry.versions)
            raise NotFoundError(
                f"model {name!r} has no version {version!r} (available: {available})"
            )
        return model

    def all_ready(self) -> bool:
        return all(entry.state is ModelState.READY for entry in self.entries.values())
