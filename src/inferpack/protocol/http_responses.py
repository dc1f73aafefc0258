"""JSON answers and the error middleware of every REST face (the server's and the router's).

A failure raised anywhere in a handler leaves as ``{"error": "<what was wrong>"}`` with the
status the error tree gives (:mod:`inferpack.errors`); anything else is a 500 whose cause
is logged, never shown. The process lives on.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from inferpack.errors import (
    InferpackError,
    OverloadedError,
    PayloadTooLargeError,
    UnauthenticatedError,
    http_status,
)

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The largest request body the app accepts (413 above); its client_max_size too.
MAX_REQUEST_BYTES = web.AppKey("max_request_bytes", int)


async def read_body(request: web.Request) -> bytes:
    """The whole body, or PayloadTooLargeError past the app's MAX_REQUEST_BYTES (refused
    before reading when the announced length says so)."""
    limit = request.app[MAX_REQUEST_BYTES]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(
            f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes"
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes") from None


def json_response(payload: Any, status: int = 200) -> web.Response:
    """``payload`` as compact JSON."""
    return web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def error_response(error: BaseException) -> web.Response:
    status = http_status(error)
    headers = {}
    if isinstance(error, OverloadedError):
        headers["Retry-After"] = str(math.ceil(error.retry_after_s))
    if isinstance(error, UnauthenticatedError):
        headers["WWW-Authenticate"] = "Bearer"
    message = str(error) if isinstance(error, InferpackError) else "internal server error"
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a JSON error with the mapped status; the process lives on."""
    try:
        return await handler(request)
    except InferpackError as error:
        return error_response(error)
    except web.HTTPRequestEntityTooLarge as error:
        return error_response(PayloadTooLargeError(f"request body is too large: {error.text}"))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return web.json_response({"error": error.reason}, status=error.status)
    except Exception as error:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(error)
