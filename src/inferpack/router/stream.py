"""``ModelStreamInfer`` through the router: a stream in, unary calls to the replicas out.

Each request of the client's stream is routed on its own (one stream may name several
models), forwarded as a ModelInfer and its answer wrapped as a ModelStreamInferResponse.
Requests run concurrently so they batch on the servers; answers leave in completion order
and carry the request's id (the server echoes it). A failed request becomes an answer with
``error_message`` and the stream goes on, as on a server. At most ``window`` requests are
held at a time, so a client that writes faster than it reads is slowed, not buffered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc

from inferpack.errors import InferpackError
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.router.wire import wrap_message

log = logging.getLogger(__name__)
_END_OF_STREAM = b""  # never a real answer: a stream answer always holds field 2


class Forwarder(Protocol):
    async def forward(self, method: str, request: bytes, context: Any) -> bytes: ...


async def relay_stream(
    forwarder: Forwarder,
    requests: AsyncIterator[bytes],
    context: grpc.aio.ServicerContext,
    window: int,
) -> AsyncIterator[bytes]:
    """Yield one answer per request of ``requests``; end once both sides are done."""
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    slots = asyncio.Semaphore(window)
    reader = asyncio.create_task(_read(forwarder, requests, context, answers, slots))
    try:
        while (answer := await answers.get()) != _END_OF_STREAM:
            yield answer
            slots.release()
        await reader  # re-raises a failure of the request side
    finally:
        reader.cancel()


async def _read(
    forwarder: Forwarder,
    requests: AsyncIterator[bytes],
    context: grpc.aio.ServicerContext,
    answers: asyncio.Queue[bytes],
    slots: asyncio.Semaphore,
) -> None:
    try:
        async with asyncio.TaskGroup() as group:
            async for request in requests:
                await slots.acquire()
                group.create_task(_answer(forwarder, request, context, answers))
    finally:
        answers.put_nowait(_END_OF_STREAM)


async def _answer(
    forwarder: Forwarder,
    request: bytes,
    context: grpc.aio.ServicerContext,
    answers: asyncio.Queue[bytes],
) -> None:
    """Queue the answer to one request; never raises (failures become error messages)."""
    try:
        response = await forwarder.forward("ModelInfer", request, context)
        answers.put_nowait(wrap_message(response, 2))
    except Exception as error:
        answers.put_nowait(_error_answer(request, error))


def _error_answer(request: bytes, error: Exception) -> bytes:
    """The failure as a stream answer echoing the request's model, version and id (the one
    place a request is parsed: failures are rare and need the id)."""
    if isinstance(error, grpc.aio.AioRpcError):
        message = error.details() or str(error.code())
    elif isinstance(error, InferpackError):
        message = str(error)
    else:
        log.exception("unhandled error in a routed gRPC stream request")
        message = "internal server error"
    parsed = pb.ModelInferRequest()
    try:
        parsed.ParseFromString(request)
    except Exception:  # a malformed request still gets its answer
        parsed = pb.ModelInferRequest()
    echo = pb.ModelInferResponse(
        model_name=parsed.model_name, model_version=parsed.model_version, id=parsed.id
    )
    return bytes(
        pb.ModelStreamInferResponse(error_message=message, infer_response=echo).SerializeToString()
    )
