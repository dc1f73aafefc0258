"""Serving overhead on a GPU (issue [1]): ResNet-50 served vs in-process on the same device.

1. batch 1, fp32, one instance: in-process p50 (backend.run: copy in, forward, copy out)
   vs served p50 over REST binary at concurrency 1 (DESIGN target: +0.5 ms at most).
2. batch 32, bf16, two instances: in-process items/s vs served items/s (target >= 90 %).
3. dynamic batching: batch-1 requests at concurrency 64 into the bf16 model (max batch 32).

Writes benchmarks/results/serve_gpu.json with the device named.

    PYTHONPATH=src python -m benchmarks.serve_gpu [--duration-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import binary_body, closed_loop, in_process, served, write_result
from inferpack.repository.init import init_repository
from tests.helpers import edit_model

WARMUP_S = 3.0
BIG_BATCH = 32


def _repo() -> Path:
    repo = Path(tempfile.mkdtemp(prefix="inferpack-gpu-"))
    init_repository(repo, ["resnet50"], seed=0)
    edit_model(
        repo,
        "resnet50",
        "r50-fp32",
        instances={"count": 1, "device": "cuda:0"},
        dynamic_batching={"max_queue_delay_us": 0},
    )
    edit_model(
        repo,
        "resnet50",
        "r50-bf16",
        instances={"count": 2, "device": "cuda:0"},
        precision="bf16",
        max_batch_size=BIG_BATCH,
        dynamic_batching={"max_queue_delay_us": 0},
    )
    shutil.rmtree(repo / "resnet50")
    return repo


async def served_runs(url: str, duration_s: float) -> dict[str, object]:
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    big = rng.standard_normal((BIG_BATCH, 3, 224, 224)).astype(np.float32)
    results: dict[str, object] = {}
    body, headers = binary_body("input", one)
    results["fp32_batch1_c1"] = await closed_loop(
        f"{url}/v2/models/r50-fp32/infer",
        body,
        headers,
        concurrency=1,
        duration_s=duration_s,
        warmup_s=WARMUP_S,
    )
    body, headers = binary_body("input", big)
    results["bf16_batch32_c8"] = await closed_loop(
        f"{url}/v2/models/r50-bf16/infer",
        body,
        headers,
        concurrency=8,
        processes=4,
        duration_s=duration_s,
        warmup_s=WARMUP_S,
    )
    body, headers = binary_body("input", one)
    results["bf16_batch1_c64_dynamic"] = await closed_loop(
        f"{url}/v2/models/r50-bf16/infer",
        body,
        headers,
        concurrency=64,
        processes=4,
        duration_s=duration_s,
        warmup_s=WARMUP_S,
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=10.0)
    args = parser.parse_args()
    repo = _repo()
    rng = np.random.default_rng(0)
    try:
        one = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
        big = rng.standard_normal((BIG_BATCH, 3, 224, 224)).astype(np.float32)
        local = {
            "fp32_batch1": in_process(repo, "r50-fp32", one, args.duration_s, WARMUP_S),
            "bf16_batch32": in_process(repo, "r50-bf16", big, args.duration_s, WARMUP_S),
        }
        with served(repo) as url:
            remote = asyncio.run(served_runs(url, args.duration_s))
    finally:
        shutil.rmtree(repo)
    c1 = remote["fp32_batch1_c1"]
    big_served = remote["bf16_batch32_c8"]
    big_items = big_served["requests_per_s"] * BIG_BATCH  # type: ignore[index,operator]
    dynamic = remote["bf16_batch1_c64_dynamic"]
    result = {
        "method": "in-process: backend.run in a loop (H2D copy, forward, D2H copy), median; "
        "served: inferpack serve subprocess, aiohttp closed-loop client, REST binary tensors, "
        "requests finishing inside the window, nearest-rank percentiles.",
        "model": "resnet50 224x224 eager (no CUDA graphs, no torch.compile)",
        "in_process": local,
        "served": remote,
        "batch1_served_minus_in_process_p50_ms": round(
            c1["latency_ms"]["p50"] - local["fp32_batch1"]["latency_p50_ms"], 3
        ),  # type: ignore[index]
        "batch32_served_over_in_process": round(
            big_items / local["bf16_batch32"]["items_per_s"], 3
        ),
        "batch32_served_items_per_s": round(big_items, 1),
        "dynamic_batching_items_per_s": dynamic["requests_per_s"],  # type: ignore[index]
    }
    path = write_result("serve_gpu.json", result)
    print(path.read_text())


if __name__ == "__main__":
    main()
