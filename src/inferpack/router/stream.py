"""``ModelStreamInfer`` through the router: a stream in, unary calls to the replicas out.

Each request of the client's stream is routed on its own (one stream may name several
models), forwarded as a ModelInfer and its answer wrapped as a ModelStreamInferResponse.
The relay is the server's (:mod:`inferpack.protocol.grpc_stream`): requests run
concurrently so they batch on the servers, answers leave in completion order and carry
the request's id (the server echoes it), at most a window of them is held. A failed
request becomes an answer with ``error_message`` and the stream goes on, as on a server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any, Protocol

import grpc

from inferpack.protocol.grpc_errors import stream_error_message
from inferpack.protocol.grpc_stream import STREAM_WINDOW, relay_stream
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.router.wire import wrap_message


class Forwarder(Protocol):
    async def forward(self, method: str, request: bytes, context: Any) -> bytes: ...


def routed_stream(
    forwarder: Forwarder,
    requests: AsyncIterator[bytes],
    context: grpc.aio.ServicerContext,
    window: int = STREAM_WINDOW,
) -> AsyncIterator[bytes]:
    """One answer per request of ``requests``; ends once both sides are done."""
    return relay_stream(requests, partial(_answer, forwarder, context), window)


async def _answer(forwarder: Forwarder, context: grpc.aio.ServicerContext, request: bytes) -> bytes:
    """The answer to one request; never raises (failures become error messages)."""
    try:
        response = await forwarder.forward("ModelInfer", request, context)
        return wrap_message(response, 2)
    except Exception as error:
        return _error_answer(request, stream_error_message(error))


def _error_answer(request: bytes, message: str) -> bytes:
    """The failure as a stream answer echoing the request's model, version and id (the one
    place a request is parsed: failures are rare and need the id)."""
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
