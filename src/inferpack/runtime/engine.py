"""The one facade every protocol adapter calls: infer, readiness, metadata, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from inferpack import __version__
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.config.model_config import ModelConfig
from inferpack.errors import (
    InferpackError,
    ModelExecutionError,
    NotFoundError,
    UnavailableError,
    failure_reason,
)
from inferpack.repository import Repository
from inferpack.runtime.calls import EngineCalls
from inferpack.runtime.manager import ModelManager
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.request_parameters import request_deadline, request_timeout_us
from inferpack.runtime.residency import ModelEntry, ModelState, memory_split
from inferpack.runtime.served_model import ServedModel
from inferpack.types import InferRequest, InferResponse

SERVER_NAME = "inferpack"
# Only extensions that are implemented (perf_analyzer and clients probe this list).
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
)


class Engine:
    def __init__(self, repository: Repository, control: ControlConfig | None = None) -> None:
        self.metrics = ServingMetrics()
        self.control = control or ControlConfig()
        self.manager = ModelManager(repository, self.metrics, self.control)
        self.calls = EngineCalls(self)  # python models calling other models (BLS)
        self.manager.pools.calls = self.calls
        self.started = False
        self.startup_error = ""
        # Set by the server once every listener (HTTP, gRPC) accepts connections, cleared
        # when it stops: ready means reachable on every protocol, not only on the one asked.
        self.listening = False

    async def start(self) -> None:
        """Load every model of the repository; ``started`` turns true when all were tried."""
        self.calls.bind(asyncio.get_running_loop())
        try:
            await self.manager.start()
        except InferpackError as error:
            self.startup_error = error.message
            raise
        finally:
            self.started = True

    async def stop(self) -> None:
        self.started = False
        await self.manager.close()

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Every listener up, every model it must serve READY (Triton's strict readiness)."""
        return (
            self.listening and self.started and not self.startup_error and self.manager.all_ready()
        )

    def server_metadata(self) -> dict[str, object]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def entry(self, name: str) -> ModelEntry:
        return self.manager.entry(name)

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """A loaded (READY) model version; UnavailableError otherwise. Never loads."""
        return self.manager.get(name, version)

    def labels(self, name: str, version: str | None = None) -> tuple[str, ...] | None:
        """The class labels of a loaded classifier (None: not loaded, or none declared)."""
        try:
            model = self.manager.get(name, version)
        except UnavailableError:
            return None
        return model.pipeline.labels if model.pipeline is not None else None

    async def model_config(self, name: str, version: str | None = None) -> ModelConfig:
        """The model's configuration, loaded or not (read from the repository and cached
        until the next index): what metadata and request decoding need. NotFoundError for
        an unknown model or a version that would not be served."""
        description = await self.manager.describe(name)
        if version and version not in description.versions:
            available = ", ".join(description.versions)
            raise NotFoundError(
                f"model {name!r} has no version {version!r} (available: {available})"
            )
        return description.config

    async def model_versions(self, name: str) -> list[str]:
        """The versions served (or that a load would serve) under the version policy."""
        return list((await self.manager.describe(name)).versions)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.manager.get(name, version)
        except UnavailableError:
            return False
        return True

    async def infer(self, request: InferRequest) -> InferResponse:
        name = request.model_name
        started = time.perf_counter()
        model: ServedModel | None = None
        try:
            timeout_us = request_timeout_us(request.parameters)
            async with (
                request_deadline(timeout_us, name) as deadline_s,  # load wait, queue and run
                self.manager.use(name, request.model_version) as model,
            ):
                self.metrics.requests.labels(name).inc()
                inflight = self.metrics.inflight.labels(name)
                inflight.inc()
                try:
                    outputs = await model.infer(request, deadline_s)
                finally:
                    inflight.dec()
        except BaseException as error:
            self.record_failure(name, error)
            if model is not None:
                model.statistics.record_request(False, time.perf_counter() - started)
            raise
        elapsed_s = time.perf_counter() - started
        wanted = request.requested_outputs
        missing = [k for k in wanted or () if k not in outputs]
        if missing:  # a python model may leave outputs out
            left_out = ModelExecutionError(
                f"model {name!r} did not return requested output(s) {missing}"
            )
            self.record_failure(name, left_out)
            model.statistics.record_request(False, elapsed_s)
            raise left_out
        self.metrics.record_request(name, elapsed_s)
        model.statistics.record_request(True, elapsed_s)
        if wanted is not None:
            outputs = {k: outputs[k] for k in wanted}
        return InferResponse(name, model.version, outputs, id=request.id)

    def loaded_models(self, name: str | None = None) -> list[ServedModel]:
        """Loaded model versions (all models, or one name: NotFound if unknown)."""
        entries = [self.manager.entry(name)] if name else list(self.manager.entries.values())
        return [
            m for e in entries for _, m in sorted(e.versions.items(), key=lambda kv: int(kv[0]))
        ]

    async def index(self, ready_only: bool = False) -> list[dict[str, object]]:
        """The repository index: every model with its state, reason and measured memory:
        ``memory_bytes`` a loaded version uses, of which ``shared_bytes`` are weights that
        another loaded version holds too (stored once) and ``own_bytes`` the rest."""
        await self.manager.refresh()
        split = memory_split(self.manager.entries.values())
        rows: list[dict[str, object]] = []
        for name in sorted(self.manager.entries):
            entry = self.manager.entries[name]
            if ready_only and entry.state is not ModelState.READY:
                continue
            versions = sorted(entry.versions, key=int) or [""]
            for version in versions:
                row: dict[str, object] = {"name": name, "state": entry.state.value}
                if version:
                    row["version"] = version
                    memory = entry.versions[version].memory_bytes
                    row["memory_bytes"] = memory
                    row["own_bytes"], row["shared_bytes"] = split.get((name, version), (memory, 0))
                if entry.reason:
                    row["reason"] = entry.reason
                rows.append(row)
        return rows

    async def load_model(self, name: str) -> None:
        """Repository extension: load (NotFound if absent, Unavailable if the load fails)."""
        self._check_control()
        entry = await self.manager.load(name)
        if entry.state is not ModelState.READY:
            raise UnavailableError(f"failed to load model {name!r}: {entry.reason}")

    async def unload_model(self, name: str) -> None:
        self._check_control()
        await self.manager.unload(name)

    def _check_control(self) -> None:
        if self.control.mode is ControlMode.NONE:
            raise UnavailableError(
                "model load/unload is disabled: start the server with "
                "--model-control-mode explicit or lru"
            )

    @contextmanager
    def counting_failures(self, model_name: str) -> Iterator[None]:
        """Count an error of ours raised inside (admission, decoding: before :meth:`infer`,
        which counts its own) as a failed request of ``model_name``, and let it go on."""
        try:
            yield
        except InferpackError as error:
            self.record_failure(model_name, error)
            raise

    def record_failure(self, model_name: str, error: BaseException) -> None:
        """Count a failed request; unknown model names are pooled to bound label cardinality."""
        if model_name not in self.manager.entries:
            model_name = "_unknown"
        self.metrics.record_failure(model_name, failure_reason(error))
