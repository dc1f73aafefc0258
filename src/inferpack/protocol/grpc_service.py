"""The KServe v2 ``inference.GRPCInferenceService`` on grpc.aio, over the same Engine.

Each RPC decodes, calls the Engine and encodes; errors from the one error tree are mapped
once (by the error tree, :mod:`inferpack.errors`) to gRPC status codes with their message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from inferpack.errors import InferpackError, grpc_code_name
from inferpack.protocol.grpc_codec import decode_model_infer, encode_model_infer
from inferpack.protocol.model_info import model_metadata
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from inferpack.runtime import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
            model = self.engine.model(request.name, request.version or None)
            return pb.ModelMetadataResponse(
                **model_metadata(self.engine.entry(request.name), model.config)
            )

        return await _guard(context, call)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            try:
                infer_request = decode_model_infer(request)
            except InferpackError as error:
                self.engine.record_failure(request.model_name, error)
                raise
            return encode_model_infer(await self.engine.infer(infer_request))

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


def create_grpc_server(engine: Engine, max_message_bytes: int) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(engine), server)  # type: ignore[no-untyped-call]
    return server
