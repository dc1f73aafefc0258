"""The one error tree of inferpack. Each protocol maps it once (REST: status, gRPC: code).

InferpackError                      500 / INTERNAL
├── InvalidInputError               400 / INVALID_ARGUMENT  bad request body, tensor or name
├── NotFoundError                   404 / NOT_FOUND          unknown model or version
├── UnavailableError                503 / UNAVAILABLE        loading, failed to load, not ready
├── OverloadedError                 429 / RESOURCE_EXHAUSTED queue full (carries retry_after_s)
├── PayloadTooLargeError            413 / RESOURCE_EXHAUSTED body over the configured limit
├── ModelExecutionError             500 / INTERNAL           the model raised while running
├── ConfigError                     (start-up) every problem of a model.yaml, all at once
└── MissingExtraError               (start-up) an optional engine is not installed
"""

from __future__ import annotations

from collections.abc import Sequence


class InferpackError(Exception):
    """Base of every error inferpack raises on purpose; the message is shown to clients."""

    @property
    def message(self) -> str:
        return str(self)


class InvalidInputError(InferpackError):
    """The request is malformed or does not match the model's inputs."""


class NotFoundError(InferpackError):
    """The model or version named in the request is not known to this server."""


class UnavailableError(InferpackError):
    """The model exists but cannot serve now (loading, failed to load, unloading)."""


class OverloadedError(InferpackError):
    """Admission control refused the request; the client should retry after a pause."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PayloadTooLargeError(InferpackError):
    """The request body is larger than the server accepts."""


class ModelExecutionError(InferpackError):
    """The model raised while running a batch; every request of that batch gets this."""


class ConfigError(InferpackError):
    """A model configuration is invalid. Holds every problem found, each naming file and field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class MissingExtraError(InferpackError):
    """An optional engine is needed but not installed; the message names the extra."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed: install it with pip install 'inferpack[{extra}]'"
        )
        self.package = package
        self.extra = extra
