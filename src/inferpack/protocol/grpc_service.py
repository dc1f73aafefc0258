"""The KServe v2 ``inference.GRPCInferenceService`` on grpc.aio, over the same Engine.

Each RPC decodes, calls the Engine and encodes; errors from the one error tree are mapped
once (by the error tree, :mod:`inferpack.errors`) to gRPC status codes with their message.
``ModelStreamInfer`` is the exception: a failed request must not end the stream, so its
error travels in the response's ``error_message`` (what Triton and tritonclient do).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from inferpack.config.server_config import DEFAULT_MAX_INFLIGHT_BYTES
from inferpack.protocol.access import RepositoryAccess
from inferpack.protocol.grpc_codec import decode_model_infer, encode_model_infer
from inferpack.protocol.grpc_errors import guard, stream_error_message
from inferpack.protocol.grpc_stream import STREAM_WINDOW, relay_stream
from inferpack.protocol.listen import grpc_server
from inferpack.protocol.model_info import model_metadata, triton_model_config, triton_statistics_for
from inferpack.protocol.offload import off_loop, output_bytes
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from inferpack.runtime import Engine
from inferpack.runtime.inflight import InflightBytes


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        engine: Engine,
        inflight: InflightBytes | None = None,
        access: RepositoryAccess | None = None,
    ) -> None:
        self.engine = engine
        # Shared with REST by a server; a servicer alone gets its own, capped at the default.
        self.inflight = inflight or InflightBytes(DEFAULT_MAX_INFLIGHT_BYTES)
        # Checked by the Repository* RPCs themselves, not by an interceptor: a grpc.aio
        # interceptor runs on every call, and cost ModelInfer 19 % of its throughput
        # (docs/architecture.md, "gRPC"). None: open (a servicer alone, in tests).
        self.access = access

    def _check_access(self, context: Any) -> None:
        """Raise the access policy's refusal (UNAUTHENTICATED / PERMISSION_DENIED)."""
        if self.access is not None:
            metadata = dict(context.invocation_metadata() or ())
            self.access.check(metadata.get("authorization"))

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=self.engine.live())

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.engine.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            ready = self.engine.model_ready(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=ready)

        return await guard(context, call)

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

        return await guard(context, call)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            return await self._infer(request)

        return await guard(context, call)

    async def _infer(self, request: Any) -> Any:
        """Decode, infer, encode one ModelInferRequest (shared by unary and stream calls).

        An unknown model is refused before decoding; the message's bytes count in flight
        (:mod:`inferpack.runtime.inflight`) until the answer is encoded. A large message is
        decoded (its answer encoded) off the event loop (:mod:`inferpack.protocol.offload`)."""
        with self.engine.counting_failures(request.model_name):
            self.engine.entry(request.model_name)
            size = request.ByteSize()
            reservation = self.inflight.reserve(size)
        with reservation:
            with self.engine.counting_failures(request.model_name):
                infer_request = await off_loop(size, decode_model_infer, request)
            infer_request.charge = reservation.add  # decoded images count in flight too
            response = await self.engine.infer(infer_request)
            return await off_loop(
                output_bytes(response, lambda _: True), encode_model_infer, response
            )

    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Answer every request of the stream with one ModelStreamInferResponse, in
        completion order, at most STREAM_WINDOW held at a time (:mod:`.grpc_stream`)."""
        async for answer in relay_stream(request_iterator, self._stream_answer, STREAM_WINDOW):
            yield answer

    async def _stream_answer(self, request: Any) -> Any:
        """The answer to one stream request; never raises (errors become messages)."""
        try:
            return pb.ModelStreamInferResponse(infer_response=await self._infer(request))
        except Exception as error:
            echo = pb.ModelInferResponse(
                model_name=request.model_name, model_version=request.model_version, id=request.id
            )
            return pb.ModelStreamInferResponse(
                error_message=stream_error_message(error), infer_response=echo
            )

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            config = await self.engine.model_config(request.name, request.version or None)
            message = json_format.ParseDict(triton_model_config(config), pb.ModelConfig())
            return pb.ModelConfigResponse(config=message)

        return await guard(context, call)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            body = triton_statistics_for(self.engine, request.name or None, request.version or None)
            return json_format.ParseDict(body, pb.ModelStatisticsResponse())

        return await guard(context, call)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            self._check_access(context)
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

        return await guard(context, call)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            self._check_access(context)
            await self.engine.load_model(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await guard(context, call)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            self._check_access(context)
            await self.engine.unload_model(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await guard(context, call)


def create_grpc_server(
    engine: Engine,
    max_message_bytes: int,
    access: RepositoryAccess | None = None,
    inflight: InflightBytes | None = None,
) -> grpc.aio.Server:
    """``access``: who may call the Repository* RPCs (open when None); ``inflight``: the
    request-bytes cap shared with the REST app (its own when None)."""
    server = grpc_server(max_message_bytes)
    servicer = InferenceServicer(engine, inflight, access)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return server
