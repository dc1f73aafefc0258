"""A KServe v2 server that does no work: the load generator's ceiling is measured on it.

REST (aiohttp) and gRPC answer every infer with a fixed tiny response and every
metadata call with one FP32 [-1, 16] input. Run: python -m benchmarks.trivial_server PORT GRPC_PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
from aiohttp import web

from inferpack.protocol.proto import inference_pb2 as pb

METADATA = {
    "name": "m",
    "versions": ["1"],
    "platform": "none",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 4]}],
}
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


async def metadata(request: web.Request) -> web.Response:
    return web.json_response(METADATA)


def _grpc_handlers() -> grpc.GenericRpcHandler:
    reply = pb.ModelInferResponse(model_name="m", model_version="1").SerializeToString()
    meta = pb.ModelMetadataResponse(
        name="m",
        versions=["1"],
        inputs=[
            pb.ModelMetadataResponse.TensorMetadata(name="input", datatype="FP32", shape=[-1, 16])
        ],
    ).SerializeToString()

    async def model_infer(request: bytes, context: object) -> bytes:
        return reply

    async def model_metadata(request: bytes, context: object) -> bytes:
        return meta

    return grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer),
            "ModelMetadata": grpc.unary_unary_rpc_method_handler(model_metadata),
        },
    )


async def main(port: int, grpc_port: int) -> None:
    app = web.Application()
    app.router.add_post("/v2/models/{m}/infer", infer)
    app.router.add_get("/v2/models/{m}", metadata)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_grpc_handlers(),))
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
