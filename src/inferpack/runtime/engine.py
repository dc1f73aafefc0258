"""The one facade every protocol adapter calls: infer, readiness, metadata, metrics."""

from __future__ import annotations

import time

from inferpack import __version__
from inferpack.errors import (
    InferpackError,
    InvalidInputError,
    ModelExecutionError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    UnavailableError,
)
from inferpack.repository import LocalRepository
from inferpack.runtime.manager import ModelEntry, ModelManager
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.served_model import ServedModel
from inferpack.types import InferRequest, InferResponse

SERVER_NAME = "inferpack"
# Only extensions that are implemented (perf_analyzer and clients probe this list).
EXTENSIONS = ("binary_tensor_data", "model_configuration")

_REASONS: tuple[tuple[type[InferpackError], str], ...] = (
    (InvalidInputError, "invalid_input"),
    (NotFoundError, "not_found"),
    (UnavailableError, "unavailable"),
    (OverloadedError, "overloaded"),
    (PayloadTooLargeError, "too_large"),
    (ModelExecutionError, "model_error"),
)


def failure_reason(error: BaseException) -> str:
    return next((reason for kind, reason in _REASONS if isinstance(error, kind)), "internal")


class Engine:
    def __init__(self, repository: LocalRepository) -> None:
        self.metrics = ServingMetrics()
        self.manager = ModelManager(repository, self.metrics)
        self.started = False
        self.startup_error = ""

    async def start(self) -> None:
        """Load every model of the repository; ``started`` turns true when all were tried."""
        try:
            await self.manager.load_all()
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
        return self.started and not self.startup_error and self.manager.all_ready()

    def server_metadata(self) -> dict[str, object]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def entry(self, name: str) -> ModelEntry:
        return self.manager.entry(name)

    def model(self, name: str, version: str | None = None) -> ServedModel:
        return self.manager.get(name, version)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.manager.get(name, version)
        except UnavailableError:
            return False
        return True

    async def infer(self, request: InferRequest) -> InferResponse:
        name = request.model_name
        started = time.perf_counter()
        inflight = None
        try:
            model = self.manager.get(name, request.model_version)
            self.metrics.requests.labels(name).inc()
            inflight = self.metrics.inflight.labels(name)
            inflight.inc()
            outputs = await model.infer(request)
        except BaseException as error:
            self.record_failure(name, error)
            raise
        finally:
            if inflight is not None:
                inflight.dec()
        self.metrics.request_s.labels(name).observe(time.perf_counter() - started)
        wanted = request.requested_outputs
        if wanted is not None:
            outputs = {k: outputs[k] for k in wanted}
        return InferResponse(name, model.version, outputs, id=request.id)

    def record_failure(self, model_name: str, error: BaseException) -> None:
        """Count a failed request; unknown model names are pooled to bound label cardinality."""
        if model_name not in self.manager.entries:
            model_name = "_unknown"
        self.metrics.record_failure(model_name, failure_reason(error))
