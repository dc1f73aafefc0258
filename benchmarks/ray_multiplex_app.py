"""Ray Serve model multiplexing over an inferpack repository: the baseline of
``benchmarks/many_models_vs_ray.py``. Runs in its own virtual environment (ray[serve],
torch, numpy, safetensors) with ``src`` on PYTHONPATH; never imported by inferpack.

One deployment, one replica, ``@serve.multiplexed(max_num_models_per_replica=N)``: every
model stays resident once a request has loaded it. A model is the repository's eager
module (``inferpack.workloads``) with the weights of its own safetensors file, as
inferpack's ``workload`` platform loads it. The HTTP routes speak as much KServe v2 as
``inferpack loadtest`` uses: ``GET /v2/models/{m}`` (metadata from model.yaml) and
``POST /v2/models/{m}/infer`` (JSON or binary tensors in, binary tensors out when asked).
Model code runs on a pool of ``--cpu-threads`` threads with one torch thread each, the
split inferpack makes of 2 CPU threads; the event loop only decodes and encodes.

    PYTHONPATH=src python benchmarks/ray_multiplex_app.py --repository DIR --models N

Prints ``ready on http://127.0.0.1:PORT (pid P)`` once serving; SIGTERM shuts Ray down.
"""

# No ``from __future__ import annotations``: FastAPI reads the route parameters' types from
# the annotations, and in the replica (the class travels there by value) names that are
# only strings cannot be resolved: ``request: Request`` would turn into a query parameter.
import argparse
import asyncio
import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from ray import serve

from inferpack.config.model_config import ModelConfig, TensorSpec
from inferpack.errors import InferpackError

_NUMPY = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32}
_HEADER_LENGTH = "inference-header-content-length"
# Requests in flight inside the replica: above the benchmark's concurrency (8), so Ray's
# router never holds requests back (its default is 5).
MAX_ONGOING_REQUESTS = 64

api = FastAPI()


def _decode(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """A v2 request body (JSON, or JSON header + raw tensors) as named arrays."""
    header = json.loads(body[:header_length] if header_length else body)
    tensors, offset = {}, header_length or 0
    for spec in header["inputs"]:
        dtype = _NUMPY[spec["datatype"]]
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = np.asarray(spec["data"], dtype=dtype)
        else:
            count = size // np.dtype(dtype).itemsize
            array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
            offset += size
        tensors[spec["name"]] = array.reshape(spec["shape"])
    return tensors


def _encode(model: str, outputs: dict[str, np.ndarray], binary: bool) -> Response:
    specs: list[dict[str, Any]] = []
    raws = []
    for name, array in outputs.items():
        spec: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
        if binary:
            raw = np.ascontiguousarray(array, dtype=np.float32).tobytes()
            spec["parameters"] = {"binary_data_size": len(raw)}
            raws.append(raw)
        else:
            spec["data"] = array.reshape(-1).tolist()
        specs.append(spec)
    header = json.dumps({"model_name": model, "model_version": "1", "outputs": specs}).encode()
    if not binary:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(raws),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def deployment(max_models: int) -> Any:
    """The multiplexed deployment class, keeping up to ``max_models`` models resident."""

    @serve.deployment(num_replicas=1, max_ongoing_requests=MAX_ONGOING_REQUESTS)
    @serve.ingress(api)
    class MultiplexedModels:
        def __init__(self, repository: str, cpu_threads: int) -> None:
            import torch

            from inferpack.repository import LocalRepository

            torch.set_num_threads(1)
            self._repository = LocalRepository(Path(repository))
            self._configs: dict[str, ModelConfig] = {}
            self._pool = ThreadPoolExecutor(
                cpu_threads, initializer=torch.set_num_threads, initargs=(1,)
            )

        def _config(self, model: str) -> ModelConfig:
            config = self._configs.get(model)
            if config is None:
                try:
                    config = self._configs[model] = self._repository.config(model)
                except InferpackError as error:
                    raise HTTPException(404, str(error)) from None
            return config

        @serve.multiplexed(max_num_models_per_replica=max_models)
        async def get_model(self, model: str) -> Any:
            """The model's eager module with its own weights (what inferpack's workload
            platform builds: ``get_workload(...).build`` then ``load_weights``)."""
            from inferpack.workloads import get_workload
            from inferpack.workloads.weights import load_weights

            [source] = self._repository.sources(model)
            module = get_workload(str(source.config.workload)).build(source.config.workload_options)
            return load_weights(module, source.artifact_path)

        @api.get("/v2/models/{model}")
        async def metadata(self, model: str) -> dict[str, Any]:
            config = self._config(model)
            batch = [-1] if config.batching else []

            def tensors(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
                return [
                    {"name": t.name, "datatype": t.datatype, "shape": batch + list(t.dims)}
                    for t in specs
                ]

            return {
                "name": model,
                "versions": ["1"],
                "platform": "ray_multiplexed",
                "inputs": tensors(config.inputs),
                "outputs": tensors(config.outputs),
            }

        @api.post("/v2/models/{model}/infer")
        async def infer(self, model: str, request: Request) -> Response:
            import torch

            config = self._config(model)
            length = request.headers.get(_HEADER_LENGTH)
            inputs = _decode(await request.body(), int(length) if length else None)
            module = await self.get_model(model)

            def run() -> dict[str, np.ndarray]:
                with torch.inference_mode():
                    args = [torch.from_numpy(inputs[t.name].copy()) for t in config.inputs]
                    out = module(*args)
                outs = out if isinstance(out, tuple) else (out,)
                return {t.name: o.numpy() for t, o in zip(config.outputs, outs, strict=True)}

            outputs = await asyncio.get_running_loop().run_in_executor(self._pool, run)
            return _encode(model, outputs, binary=bool(length))

    return MultiplexedModels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", required=True)
    parser.add_argument("--models", type=int, required=True)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--cpu-threads", type=int, default=2)
    args = parser.parse_args()
    import ray

    ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    app = deployment(args.models).bind(args.repository, args.cpu_threads)
    serve.run(app, route_prefix="/")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"ready on http://127.0.0.1:{args.port} (pid {os.getpid()})", flush=True)
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
