"""Errors of a gRPC call, mapped once for every gRPC face (the server's and the router's).

A unary call runs inside :func:`guard`: an error of the error tree leaves with its code
and message (:mod:`inferpack.errors`), an error a backend answered (the router's
``grpc.aio.AioRpcError``) leaves unchanged with its code, details and trailing metadata,
and anything else is INTERNAL with its cause logged, never shown. A stream request's
failure becomes the message of its answer instead (:func:`stream_error_message`), so the
stream goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from inferpack.errors import InferpackError, grpc_code_name

log = logging.getLogger(__name__)
T = TypeVar("T")
INTERNAL_MESSAGE = "internal server error"


def grpc_status(error: BaseException) -> grpc.StatusCode:
    """The error tree's gRPC code (see :mod:`inferpack.errors`) as a grpc.StatusCode."""
    return grpc.StatusCode[grpc_code_name(error)]


async def guard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``'s answer, or the call aborted with the code its failure maps to."""
    try:
        return await call()
    except grpc.aio.AioRpcError as error:
        trailing = tuple(error.trailing_metadata() or ())
        await context.abort(error.code(), error.details() or "", trailing)
    except InferpackError as error:
        await context.abort(grpc_status(error), str(error))
    except Exception:
        log.exception("unhandled error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    raise AssertionError("unreachable: abort raises")


def stream_error_message(error: Exception) -> str:
    """What a stream answer's ``error_message`` says about ``error``."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.details() or str(error.code())
    if isinstance(error, InferpackError):
        return str(error)
    log.exception("unhandled error in a gRPC stream request", exc_info=error)
    return INTERNAL_MESSAGE
