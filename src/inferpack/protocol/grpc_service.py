"""The KServe v2 ``inference.GRPCInferenceService`` on grpc.aio, over the same Engine.

Each RPC decodes, calls the Engine and encodes; errors from the one error tree are mapped
once (by the error tree, :mod:`inferpack.errors`) to gRPC status codes with their message.
``ModelStreamInfer`` is the exception: a failed request must not end the stream, so its
error travels in the response's ``error_message`` (what Triton and tritonclient do).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from inferpack.config.server_config import DEFAULT_MAX_INFLIGHT_BYTES
from inferpack.errors import InferpackError, grpc_code_name
from inferpack.protocol.grpc_codec import decode_model_infer, encode_model_infer
from inferpack.protocol.model_info import model_metadata, triton_model_config, triton_statistics_for
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from inferpack.runtime import Engine
from inferpack.runtime.inflight import InflightBytes

log = logging.getLogger(__name__)
T = TypeVar("T")

# Requests of one stream answered but not yet sent, plus those running: bounds memory when a
# client writes faster than it reads (reading stops until answers drain). Generous, as the
# model queues (default 1024 requests) refuse far earlier under a real overload.
STREAM_WINDOW = 1024
_END_OF_STREAM = object()


def grpc_status(error: BaseException) -> grpc.StatusCode:
    """The error tree's gRPC code (see :mod:`inferpack.errors`) as a grpc.StatusCode."""
    return grpc.StatusCode[grpc_code_name(error)]


async def _guard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except InferpackError as error:
        await context.abort(grpc_status(error), str(error))
    except Exception:
        log.exception("unhandled error in gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
    raise AssertionError("unreachable: abort raises")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, engine: Engine, inflight: InflightBytes | None = None) -> None:
        self.engine = engine
        # Shared with REST by a server; a servicer alone gets its own, capped at the default.
        self.inflight = inflight or InflightBytes(DEFAULT_MAX_INFLIGHT_BYTES)

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=self.engine.live())

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.engine.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            ready = self.engine.model_ready(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=ready)

        return await _guard(context, call)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        metadata = self.engine.server_metadata()
        return pb.ServerMetadataResponse(
            name=str(metadata["name"]),
            version=str(metadata["version"]),
            extensions=list(metadata["extensions"]),  # type: ignore[call-overload]
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            config = await self.engine.model_config(request.name, request.version or None)
            versions = await self.engine.model_versions(request.name)
            return pb.ModelMetadataResponse(**model_metadata(config, versions))

        return await _guard(context, call)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            return await self._infer(request)

        return await _guard(context, call)

    async def _infer(self, request: Any) -> Any:
        """Decode, infer, encode one ModelInferRequest (shared by unary and stream calls).

        An unknown model is refused before decoding; the message's bytes count in flight
        (:mod:`inferpack.runtime.inflight`) until the answer is encoded."""
        with self.engine.counting_failures(request.model_name):
            self.engine.entry(request.model_name)
            reservation = self.inflight.reserve(request.ByteSize())
        with reservation:
            with self.engine.counting_failures(request.model_name):
                infer_request = decode_model_infer(request)
            infer_request.charge = reservation.add  # decoded images count in flight too
            return encode_model_infer(await self.engine.infer(infer_request))

    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Answer every request of the stream with one ModelStreamInferResponse.

        Requests run concurrently (so they batch together), answers leave in completion
        order and carry the request's id; the stream ends once the client has closed its
        side and every request is answered. At most STREAM_WINDOW are held at a time."""
        answers: asyncio.Queue[Any] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)
        reader = asyncio.create_task(self._read_stream(request_iterator, answers, window))
        try:
            while (answer := await answers.get()) is not _END_OF_STREAM:
                yield answer
                window.release()
            await reader  # re-raises a failure of the request side
        finally:
            reader.cancel()

    async def _read_stream(
        self, requests: AsyncIterator[Any], answers: asyncio.Queue[Any], window: asyncio.Semaphore
    ) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                async for request in requests:
                    await window.acquire()
                    group.create_task(self._stream_answer(request, answers))
        finally:
            answers.put_nowait(_END_OF_STREAM)

    async def _stream_answer(self, request: Any, answers: asyncio.Queue[Any]) -> None:
        """Queue the answer to one stream request; never raises (errors become messages)."""
        try:
            answer = pb.ModelStreamInferResponse(infer_response=await self._infer(request))
        except Exception as error:
            if isinstance(error, InferpackError):
                message = str(error)
            else:
                log.exception("unhandled error in a gRPC stream request")
                message = "internal server error"
            echo = pb.ModelInferResponse(
                model_name=request.model_name, model_version=request.model_version, id=request.id
            )
            answer = pb.ModelStreamInferResponse(error_message=message, infer_response=echo)
        answers.put_nowait(answer)

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            config = await self.engine.model_config(request.name, request.version or None)
            message = json_format.ParseDict(triton_model_config(config), pb.ModelConfig())
            return pb.ModelConfigResponse(config=message)

        return await _guard(context, call)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            body = triton_statistics_for(self.engine, request.name or None, request.version or None)
            return json_format.ParseDict(body, pb.ModelStatisticsResponse())

        return await _guard(context, call)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            rows = await self.engine.index(ready_only=request.ready)
            models = [
                pb.RepositoryIndexResponse.ModelIndex(
                    name=str(row["name"]),
                    version=str(row.get("version", "")),
                    state=str(row["state"]),
                    reason=str(row.get("reason", "")),
                )
                for row in rows
            ]
            return pb.RepositoryIndexResponse(models=models)

        return await _guard(context, call)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            await self.engine.load_model(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await _guard(context, call)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            await self.engine.unload_model(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await _guard(context, call)


def create_grpc_server(
    engine: Engine,
    max_message_bytes: int,
    interceptors: Sequence[Any] = (),
    inflight: InflightBytes | None = None,
) -> grpc.aio.Server:
    """``interceptors``: grpc.aio.ServerInterceptor objects (e.g. repository API access);
    ``inflight``: the request-bytes cap shared with the REST app (its own when None)."""
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
        ],
    )
    servicer = InferenceServicer(engine, inflight)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return server
