"""Where batch-1 serving time goes, layer by layer, on one device (no HTTP client noise).

Times the same batch-1 request through: the backend directly; one pool thread hop; the
Engine (validation, batcher, pool thread, metrics); the v2 binary codec around it; and the
real HTTP server with an aiohttp client. Prints a JSON with p50 ms per layer.

    PYTHONPATH=src python -m benchmarks.overhead_probe [--workload resnet50] [--device cuda:0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np
import yaml

from benchmarks.common import binary_body
from inferpack.config import ServerConfig
from inferpack.protocol.v2_codec import decode_infer_request, encode_infer_response
from inferpack.repository.init import init_repository
from inferpack.server import start_server
from inferpack.types import InferRequest

ITERATIONS = 300


async def _p50_ms(call: Callable[[], Awaitable[object]]) -> float:
    for _ in range(30):
        await call()
    samples = []
    for _ in range(ITERATIONS):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return round(float(np.median(samples)) * 1e3, 3)


async def main(workload: str, device: str) -> dict[str, float]:
    repo = Path(tempfile.mkdtemp())
    init_repository(repo, [workload])
    path = repo / workload / "model.yaml"
    config = yaml.safe_load(path.read_text())
    config["instances"] = {"count": 1, "device": device}
    path.write_text(yaml.safe_dump(config))
    server = await start_server(ServerConfig(str(repo), http_port=0, grpc_port=None))
    await server.wait_started()
    engine = server.engine
    model = engine.model(workload)
    spec = model.config.inputs[0]
    x = np.random.default_rng(0).standard_normal((1, *spec.dims)).astype(np.float32)
    backend = model.backends[0]
    pool = model._executors[0]
    loop = asyncio.get_running_loop()
    body, headers = binary_body(spec.name, x)
    header_length = int(headers["Inference-Header-Content-Length"])

    async def direct() -> object:
        return backend.run({spec.name: x})

    async def hop() -> object:
        return await loop.run_in_executor(pool, backend.run, {spec.name: x})

    async def through_engine() -> object:
        return await engine.infer(InferRequest(workload, {spec.name: x}))

    async def with_codec() -> object:
        request, encoding = decode_infer_request(body, header_length, workload, None)
        return encode_infer_response(await engine.infer(request), encoding)

    results = {
        "backend_direct_on_loop_thread": await _p50_ms(direct),
        "one_pool_thread_hop": await _p50_ms(hop),
        "engine_infer": await _p50_ms(through_engine),
        "engine_plus_v2_codec": await _p50_ms(with_codec),
    }
    async with aiohttp.ClientSession() as session:
        url = f"{server.url}/v2/models/{workload}/infer"

        async def http() -> object:
            async with session.post(url, data=body, headers=headers) as response:
                return await response.read()

        results["http_same_process_client"] = await _p50_ms(http)
    await server.stop()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", default="resnet50")
    parser.add_argument("--device", default="cuda:0")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.workload, args.device)), indent=1))
