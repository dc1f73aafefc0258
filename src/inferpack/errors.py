"""The one error tree of inferpack, with its wire mapping beside it.

Each class carries its HTTP status, its gRPC status code (by name: this module imports no
grpc) and the short reason that labels failure metrics. Protocols read these attributes;
no other table exists.

InferpackError                      500 / INTERNAL           internal
├── InvalidInputError               400 / INVALID_ARGUMENT   bad request body, tensor or name
├── NotFoundError                   404 / NOT_FOUND          unknown model or version
├── UnauthenticatedError            401 / UNAUTHENTICATED    repository API: token missing or wrong
├── PermissionDeniedError           403 / PERMISSION_DENIED  repository API: off on this address
├── UnavailableError                503 / UNAVAILABLE        loading, failed to load, shutting down
│   ├── ConfigError                 503 / UNAVAILABLE        every problem of a model.yaml at once
│   └── MissingExtraError           503 / UNAVAILABLE        an optional engine is not installed
├── OverloadedError                 429 / RESOURCE_EXHAUSTED queue or bytes in flight full
├── PayloadTooLargeError            413 / RESOURCE_EXHAUSTED body over the configured limit
├── DeadlineExceededError           504 / DEADLINE_EXCEEDED  the request's ``timeout`` passed
├── ModelExecutionError             500 / INTERNAL           the model raised while running
└── ListenError                     (start-up)               a port cannot be bound (in use, ...)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


class InferpackError(Exception):
    """Base of every error inferpack raises on purpose; the message is shown to clients."""

    http_status = 500
    grpc_code = "INTERNAL"  # a grpc.StatusCode member name
    reason = "internal"  # label of inferpack_request_failures

    @property
    def message(self) -> str:
        return str(self)


class InvalidInputError(InferpackError):
    """The request is malformed or does not match the model's inputs."""

    http_status, grpc_code, reason = 400, "INVALID_ARGUMENT", "invalid_input"


class NotFoundError(InferpackError):
    """The model or version named in the request is not known to this server."""

    http_status, grpc_code, reason = 404, "NOT_FOUND", "not_found"


class UnauthenticatedError(InferpackError):
    """The request lacks the credentials an endpoint requires (or they are wrong)."""

    http_status, grpc_code, reason = 401, "UNAUTHENTICATED", "unauthenticated"


class PermissionDeniedError(InferpackError):
    """The endpoint is closed to this request whatever its credentials."""

    http_status, grpc_code, reason = 403, "PERMISSION_DENIED", "permission_denied"


class UnavailableError(InferpackError):
    """The model exists but cannot serve now (loading, failed to load, unloading)."""

    http_status, grpc_code, reason = 503, "UNAVAILABLE", "unavailable"


class OverloadedError(InferpackError):
    """Admission control refused the request; the client should retry after a pause."""

    http_status, grpc_code, reason = 429, "RESOURCE_EXHAUSTED", "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PayloadTooLargeError(InferpackError):
    """The request body is larger than the server accepts."""

    http_status, grpc_code, reason = 413, "RESOURCE_EXHAUSTED", "too_large"


class DeadlineExceededError(InferpackError):
    """The request's deadline (its ``timeout`` parameter) passed before it was answered."""

    http_status, grpc_code, reason = 504, "DEADLINE_EXCEEDED", "deadline_exceeded"


class ModelExecutionError(InferpackError):
    """The model raised while running a batch; every request of that batch gets this."""

    reason = "model_error"


class ListenError(InferpackError):
    """A listener cannot open its port (taken by another process, not permitted, no such
    address). Raised at start-up only: the process cannot serve, so it stops with this
    one line."""


class ConfigError(UnavailableError):
    """A model configuration is invalid. Holds every problem found, each naming file and field.

    At start-up it stops the CLI; at serving time it makes the model unavailable (503)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class MissingExtraError(UnavailableError):
    """An optional engine is needed but not installed; the message names the extra."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed: install it with pip install 'inferpack[{extra}]'"
        )
        self.package = package
        self.extra = extra


def http_status(error: BaseException) -> int:
    """The HTTP status for any exception (not ours: 500)."""
    return error.http_status if isinstance(error, InferpackError) else 500


def grpc_code_name(error: BaseException) -> str:
    """The gRPC status code name for any exception (not ours: INTERNAL)."""
    return error.grpc_code if isinstance(error, InferpackError) else "INTERNAL"


def failure_reason(error: BaseException) -> str:
    """The metrics label for a failed request: a request its client gave up on (cancelled)
    is ``cancelled``, not an internal error."""
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return error.reason if isinstance(error, InferpackError) else "internal"
