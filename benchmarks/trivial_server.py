"""A KServe v2 server that does no work: the load generator's ceiling, and the protocol
frameworks' own cost per call, are measured on it.

REST (aiohttp) and gRPC answer every infer with a fixed tiny response and every
metadata call with one FP32 [-1, 16] input; server metadata and the model configuration
answer too, so Triton's perf_analyzer runs against it. gRPC is grpc.aio (the server's) or,
with ``sync``, grpcio's thread-pool server (8 threads).

Run: python -m benchmarks.trivial_server PORT GRPC_PORT [aio|sync]
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format

from inferpack.protocol.proto import inference_pb2 as pb

METADATA = {
    "name": "m",
    "versions": ["1"],
    "platform": "none",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 4]}],
}
CONFIG = {
    "name": "m",
    "platform": "none",
    "max_batch_size": 8,
    "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [16]}],
    "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [4]}],
}
SERVER = {"name": "trivial", "version": "1", "extensions": []}
ANSWER = json.dumps(
    {
        "model_name": "m",
        "model_version": "1",
        "outputs": [
            {"name": "output", "datatype": "FP32", "shape": [1, 4], "data": [0.0, 0.0, 0.0, 0.0]}
        ],
    }
).encode()


async def infer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


def _answers() -> dict[str, bytes]:
    """Each gRPC method's fixed, serialized answer."""
    output = pb.ModelInferResponse.InferOutputTensor(name="output", datatype="FP32", shape=[1, 4])
    reply = pb.ModelInferResponse(
        model_name="m", model_version="1", outputs=[output], raw_output_contents=[bytes(16)]
    )
    config = json_format.ParseDict(CONFIG, pb.ModelConfig())
    return {
        "ModelInfer": reply.SerializeToString(),
        "ModelMetadata": json_format.ParseDict(
            METADATA, pb.ModelMetadataResponse()
        ).SerializeToString(),
        "ModelConfig": pb.ModelConfigResponse(config=config).SerializeToString(),
        "ServerMetadata": json_format.ParseDict(
            SERVER, pb.ServerMetadataResponse()
        ).SerializeToString(),
    }


def _grpc_handlers(is_async: bool) -> grpc.GenericRpcHandler:
    def answering(answer: bytes) -> Callable[..., Any]:
        async def reply(request: bytes, context: object) -> bytes:
            return answer

        def reply_sync(request: bytes, context: object) -> bytes:
            return answer

        return reply if is_async else reply_sync

    return grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            method: grpc.unary_unary_rpc_method_handler(answering(answer))
            for method, answer in _answers().items()
        },
    )


async def main(port: int, grpc_port: int, kind: str) -> None:
    app = web.Application()
    app.router.add_post("/v2/models/{m}/infer", infer)
    app.router.add_get("/v2/models/{m}", lambda _: web.json_response(METADATA))
    app.router.add_get("/v2/models/{m}/config", lambda _: web.json_response(CONFIG))
    app.router.add_get("/v2", lambda _: web.json_response(SERVER))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    if kind == "sync":
        sync_server = grpc.server(ThreadPoolExecutor(8))
        sync_server.add_generic_rpc_handlers((_grpc_handlers(is_async=False),))
        sync_server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        sync_server.start()
    else:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_grpc_handlers(is_async=True),))
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "aio")
    )
