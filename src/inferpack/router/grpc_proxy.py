"""The router's ``inference.GRPCInferenceService``: raw bytes in, raw bytes out.

A generic handler registers every method with identity (de)serializers, so a request is
never parsed: the model name is read from protobuf field 1 (:mod:`inferpack.router.wire`)
and the bytes go to a replica over one grpc.aio channel per backend. The backend's status
code, details and trailing metadata come back unchanged. Server-level calls are answered
for the whole fleet (live by the router, ready only when every backend is); statistics of
all models are the backends' answers concatenated (a serialized message followed by
another is their merge, so no parse either).

A fleet-wide call waits at most ``probe_timeout_s`` (or the client's deadline) for each
backend: one hung server does not hang the fleet's answer. The answer is made of the
backends that answered; each one that did not is named in the trailing metadata
(``inferpack-unanswered``) and the router's log, and the repository index lists the models
that only it hosts as UNAVAILABLE with the reason.

``ModelStreamInfer`` is served as unary calls: each request of the stream is forwarded as
a ModelInfer to its model's replica, answers are wrapped and leave in completion order. A
failure becomes the answer's ``error_message`` and the stream goes on, as on a server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc

from inferpack.errors import PermissionDeniedError
from inferpack.protocol.grpc_errors import guard
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.router.demand import DemandMeter
from inferpack.router.rest import PROBE_TIMEOUT_S
from inferpack.router.stream import routed_stream
from inferpack.router.table import Backend, BackendUnreachableError, Picker, with_failover
from inferpack.router.wire import string_field

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
# Per-model methods: the model's name is field 1 of each request.
MODEL_METHODS = ("ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics")
# Trailing metadata naming the backends a fleet-wide answer was made without.
UNANSWERED_KEY = "inferpack-unanswered"
# gRPC errors that mean the backend was not reached at all (safe to try another replica).
_REFUSED_HINTS = ("failed to connect", "connection refused", "connect failed")
Unary = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # A restarted server is reachable again within a second, not after gRPC's default
    # reconnect back-off (up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class GrpcForwarder:
    """One channel per backend and the calls that forward through them."""

    def __init__(
        self,
        picker: Picker,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        meter: DemandMeter | None = None,
    ) -> None:
        self.picker = picker
        self.probe_timeout_s = probe_timeout_s
        self.meter = meter
        self._channels: dict[Backend, grpc.aio.Channel] = {}
        for backend in picker.table.backends:
            self._channel(backend)

    def _channel(self, backend: Backend) -> grpc.aio.Channel:
        """The backend's channel, opened on first use (a server added by a re-plan)."""
        channel = self._channels.get(backend)
        if channel is None:
            channel = grpc.aio.insecure_channel(backend.grpc_address, options=_CHANNEL_OPTIONS)
            self._channels[backend] = channel
        return channel

    async def forget(self, backend: Backend) -> None:
        """Close the channel of a backend that left the fleet."""
        channel = self._channels.pop(backend, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))

    async def call(
        self,
        backend: Backend,
        method: str,
        request: bytes,
        context: grpc.aio.ServicerContext | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        """``method`` on ``backend``: its answer, or a grpc.aio.AioRpcError it returned;
        BackendUnreachableError when there was no connection. A call forwarded for a
        client (``context``) keeps the client's deadline and metadata."""
        stub = self._channel(backend).unary_unary(f"/{SERVICE}/{method}")
        timeout = context.time_remaining() if context is not None else timeout_s
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
        """A per-model call, to the least busy replica of the model it names; inference
        calls are recorded in the demand meter (router/demand.py)."""
        model = string_field(request, 1)
        self.picker.table.replicas(model)  # unknown model: NOT_FOUND before anything else
        started, failed = time.perf_counter(), True
        try:
            answer = await with_failover(
                self.picker,
                model,
                lambda backend: self.call(backend, method, request, context),
                retry_broken=True,
            )
            failed = False
            return answer
        finally:
            if method == "ModelInfer" and self.meter is not None:
                self.meter.record(model, time.perf_counter() - started, failed)

    async def each_backend(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext
    ) -> FleetAnswers:
        """``method`` on every backend at once, each bounded by ``probe_timeout_s`` (or by
        the client's deadline when that comes first)."""
        timeout_s = self.probe_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_s = min(timeout_s, remaining)
        backends = self.picker.table.backends
        calls = (self.call(b, method, request, timeout_s=timeout_s) for b in backends)
        answers = await asyncio.gather(*calls, return_exceptions=True)
        fleet = FleetAnswers(method)
        for backend, answer in zip(backends, answers, strict=True):
            if isinstance(answer, bytes):
                fleet.answered.append(answer)
            else:
                fleet.unanswered.append((backend, _why(answer, timeout_s)))
        return fleet


@dataclass
class FleetAnswers:
    """A fleet-wide call's answers (in backend order) and the backends that gave none."""

    method: str
    answered: list[bytes] = field(default_factory=list)
    unanswered: list[tuple[Backend, str]] = field(default_factory=list)  # (backend, why)

    def missing(self) -> str:
        return "; ".join(f"{b.name} at {b.grpc_address}: {why}" for b, why in self.unanswered)

    def report(self, context: grpc.aio.ServicerContext) -> None:
        """Name the backends that did not answer: in the trailing metadata and the log."""
        if not self.unanswered:
            return
        missing = self.missing()
        log.warning("%s answered without %s", self.method, missing)
        value = missing.encode("ascii", "replace").decode()  # metadata values are ASCII
        context.set_trailing_metadata(((UNANSWERED_KEY, value),))


def _why(error: BaseException, timeout_s: float) -> str:
    """Why a backend gave no answer to a fleet-wide call, in a few words."""
    if isinstance(error, grpc.aio.AioRpcError):
        if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"no answer in {timeout_s:g} s"
        return f"{error.code().name}: {error.details() or ''}"
    if isinstance(error, BackendUnreachableError):
        return "unreachable"
    log.error("fleet-wide call failed", exc_info=error)
    return type(error).__name__


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


class RouterService:
    """The service's methods over a GrpcForwarder; ``handler()`` registers them."""

    def __init__(self, forwarder: GrpcForwarder) -> None:
        self.forwarder = forwarder

    def _model_method(self, method: str) -> Unary:
        async def route(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            # Inside the guard: a malformed request is INVALID_ARGUMENT, not UNKNOWN.
            if method == "ModelStatistics" and not string_field(request, 1):
                return await self._all_statistics(request, context)
            return await self.forwarder.forward(method, request, context)

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await guard(context, partial(route, request, context))

        return handle

    async def _all_statistics(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        fleet = await self.forwarder.each_backend("ModelStatistics", request, context)
        fleet.report(context)
        return b"".join(fleet.answered)

    async def server_live(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return bytes(pb.ServerLiveResponse(live=True).SerializeToString())

    async def server_ready(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Ready only when every backend answers that it is."""
        fleet = await self.forwarder.each_backend("ServerReady", request, context)
        fleet.report(context)
        ready = not fleet.unanswered and all(
            pb.ServerReadyResponse.FromString(answer).ready for answer in fleet.answered
        )
        return bytes(pb.ServerReadyResponse(ready=ready).SerializeToString())

    async def server_metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The first backend that answers speaks for the fleet."""
        fleet = await self.forwarder.each_backend("ServerMetadata", request, context)
        fleet.report(context)
        if fleet.answered:
            return fleet.answered[0]
        message = f"no backend answered ServerMetadata: {fleet.missing()}"
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)
        raise AssertionError("unreachable: abort raises")

    async def repository_index(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The backends' indexes merged: one row per model, READY where any replica is. A
        model whose hosts did not answer is UNAVAILABLE, naming them (unless ready only)."""
        fleet = await self.forwarder.each_backend("RepositoryIndex", request, context)
        fleet.report(context)
        merged: dict[str, Any] = {}
        for answer in fleet.answered:
            for row in pb.RepositoryIndexResponse.FromString(answer).models:
                kept = merged.get(row.name)
                if kept is None or (row.state == "READY" and kept.state != "READY"):
                    merged[row.name] = row
        if not pb.RepositoryIndexRequest.FromString(request).ready:
            for backend, why in fleet.unanswered:
                for model in self.forwarder.picker.table.hosted_by(backend):
                    reason = f"server {backend.name} at {backend.grpc_address}: {why}"
                    row = pb.RepositoryIndexResponse.ModelIndex(
                        name=model, state="UNAVAILABLE", reason=reason
                    )
                    merged.setdefault(model, row)
        rows = [merged[name] for name in sorted(merged)]
        return bytes(pb.RepositoryIndexResponse(models=rows).SerializeToString())

    async def refuse_control(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        error = PermissionDeniedError(
            "the router does not load or unload models: the plan places them on servers"
        )
        return await guard(context, partial(_raise, error))

    async def stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for answer in routed_stream(self.forwarder, requests, context):
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
