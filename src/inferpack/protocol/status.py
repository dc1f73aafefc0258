"""The error tree mapped to HTTP, once (gRPC gets its own table beside it)."""

from __future__ import annotations

from inferpack.errors import (
    InferpackError,
    InvalidInputError,
    ModelExecutionError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    UnavailableError,
)

_HTTP_STATUS: tuple[tuple[type[InferpackError], int], ...] = (
    (InvalidInputError, 400),
    (NotFoundError, 404),
    (PayloadTooLargeError, 413),
    (OverloadedError, 429),
    (UnavailableError, 503),
    (ModelExecutionError, 500),
)


def http_status(error: BaseException) -> int:
    return next((status for kind, status in _HTTP_STATUS if isinstance(error, kind)), 500)
