"""The router's ``inference.GRPCInferenceService``: raw bytes in, raw bytes out.

A generic handler registers every method with identity (de)serializers, so a request is
never parsed: the model name is read from protobuf field 1 (:mod:`inferpack.router.wire`)
and the bytes go to a replica over one grpc.aio channel per backend. The backend's status
code, details and trailing metadata come back unchanged. Server-level calls are answered
for the whole fleet (live by the router, ready only when every backend is); statistics of
all models are the backends' answers concatenated (a serialized message followed by
another is their merge, so no parse either).

``ModelStreamInfer`` is served as unary calls: each request of the stream is forwarded as
a ModelInfer to its model's replica, answers are wrapped and leave in completion order. A
failure becomes the answer's ``error_message`` and the stream goes on, as on a server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from inferpack.errors import InferpackError, PermissionDeniedError, grpc_code_name
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.router.stream import relay_stream
from inferpack.router.table import Backend, BackendUnreachableError, Picker, with_failover
from inferpack.router.wire import string_field

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
# Per-model methods: the model's name is field 1 of each request.
MODEL_METHODS = ("ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics")
# Requests of one stream in flight at once (the servers' own window).
STREAM_WINDOW = 1024
# gRPC errors that mean the backend was not reached at all (safe to try another replica).
_REFUSED_HINTS = ("failed to connect", "connection refused", "connect failed")
Unary = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]


class GrpcForwarder:
    """One channel per backend and the calls that forward through them."""

    def __init__(self, picker: Picker) -> None:
        self.picker = picker
        self._channels = {
            backend: grpc.aio.insecure_channel(backend.grpc_address, options=_CHANNEL_OPTIONS)
            for backend in picker.table.backends
        }

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))

    async def call(
        self,
        backend: Backend,
        method: str,
        request: bytes,
        context: grpc.aio.ServicerContext | None = None,
    ) -> bytes:
        """``method`` on ``backend``: its answer, or a grpc.aio.AioRpcError it returned;
        BackendUnreachableError when there was no connection."""
        stub = self._channels[backend].unary_unary(f"/{SERVICE}/{method}")
        timeout = context.time_remaining() if context is not None else None
        metadata = _forwarded_metadata(context)
        try:
            answer: bytes = await stub(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE or not _is_transport(error):
                raise
            details = error.details() or "unavailable"
            refused = any(hint in details.lower() for hint in _REFUSED_HINTS)
            raise BackendUnreachableError(
                backend, backend.grpc_address, details, refused=refused
            ) from None
        return answer

    async def forward(self, method: str, request: bytes, context: Any) -> bytes:
        """A per-model call, to the least busy replica of the model it names."""
        model = string_field(request, 1)
        self.picker.table.replicas(model)  # unknown model: NOT_FOUND before anything else
        return await with_failover(
            self.picker, model, lambda backend: self.call(backend, method, request, context)
        )

    async def each_backend(self, method: str, request: bytes) -> list[bytes | BaseException]:
        backends = self.picker.table.backends
        calls = (self.call(b, method, request) for b in backends)
        return list(await asyncio.gather(*calls, return_exceptions=True))


def _forwarded_metadata(context: grpc.aio.ServicerContext | None) -> tuple[tuple[str, Any], ...]:
    """The client's metadata minus what belongs to this hop (pseudo and grpc- headers)."""
    if context is None:
        return ()
    pairs = context.invocation_metadata() or ()
    return tuple(
        (key, value)
        for key, value in pairs
        if not key.startswith((":", "grpc-")) and key not in ("user-agent", "te", "content-type")
    )


def _is_transport(error: grpc.aio.AioRpcError) -> bool:
    """An UNAVAILABLE raised by the channel (no server answered), not by a backend's model:
    the servers' own UNAVAILABLE messages never mention sockets or connections."""
    details = (error.details() or "").lower()
    return any(word in details for word in ("connect", "socket", "reset", "closed", "eof"))


async def _guard(context: grpc.aio.ServicerContext, call: Awaitable[bytes]) -> bytes:
    """Run ``call``; a backend's error and ours both leave with their own code and message."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        trailing = tuple(error.trailing_metadata() or ())
        await context.abort(error.code(), error.details() or "", trailing)
    except InferpackError as error:
        await context.abort(grpc.StatusCode[grpc_code_name(error)], str(error))
    except Exception:
        log.exception("unhandled error in a routed gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
    raise AssertionError("unreachable: abort raises")


class RouterService:
    """The service's methods over a GrpcForwarder; ``handler()`` registers them."""

    def __init__(self, forwarder: GrpcForwarder) -> None:
        self.forwarder = forwarder

    def _model_method(self, method: str) -> Unary:
        async def route(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            # Inside the guard: a malformed request is INVALID_ARGUMENT, not UNKNOWN.
            if method == "ModelStatistics" and not string_field(request, 1):
                return await self._all_statistics(request)
            return await self.forwarder.forward(method, request, context)

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await _guard(context, route(request, context))

        return handle

    async def _all_statistics(self, request: bytes) -> bytes:
        answers = await self.forwarder.each_backend("ModelStatistics", request)
        return b"".join(answer for answer in answers if isinstance(answer, bytes))

    async def server_live(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return bytes(pb.ServerLiveResponse(live=True).SerializeToString())

    async def server_ready(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Ready only when every backend says it is."""
        answers = await self.forwarder.each_backend("ServerReady", request)
        ready = True
        for answer in answers:
            parsed = pb.ServerReadyResponse()
            if isinstance(answer, bytes):
                parsed.ParseFromString(answer)
            ready = ready and parsed.ready
        return bytes(pb.ServerReadyResponse(ready=ready).SerializeToString())

    async def server_metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The first backend that answers speaks for the fleet."""
        for answer in await self.forwarder.each_backend("ServerMetadata", request):
            if isinstance(answer, bytes):
                return answer
        await context.abort(grpc.StatusCode.UNAVAILABLE, "no backend answered ServerMetadata")
        raise AssertionError("unreachable: abort raises")

    async def repository_index(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The backends' indexes merged: one row per model, READY where any replica is."""
        merged: dict[str, Any] = {}
        for answer in await self.forwarder.each_backend("RepositoryIndex", request):
            if not isinstance(answer, bytes):
                continue
            for row in pb.RepositoryIndexResponse.FromString(answer).models:
                kept = merged.get(row.name)
                if kept is None or (row.state == "READY" and kept.state != "READY"):
                    merged[row.name] = row
        rows = [merged[name] for name in sorted(merged)]
        return bytes(pb.RepositoryIndexResponse(models=rows).SerializeToString())

    async def refuse_control(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        error = PermissionDeniedError(
            "the router does not load or unload models: the plan places them on servers"
        )
        return await _guard(context, _raise(error))

    async def stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for answer in relay_stream(self.forwarder, requests, context, STREAM_WINDOW):
            yield answer

    def handler(self) -> grpc.GenericRpcHandler:
        unary = grpc.unary_unary_rpc_method_handler
        methods: dict[str, Any] = {m: unary(self._model_method(m)) for m in MODEL_METHODS}
        methods |= {
            "ServerLive": unary(self.server_live),
            "ServerReady": unary(self.server_ready),
            "ServerMetadata": unary(self.server_metadata),
            "RepositoryIndex": unary(self.repository_index),
            "RepositoryModelLoad": unary(self.refuse_control),
            "RepositoryModelUnload": unary(self.refuse_control),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.stream_infer),
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)


async def _raise(error: BaseException) -> bytes:
    raise error
