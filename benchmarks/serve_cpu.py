"""Serving benchmark on a CPU host (issue [1]).

1. tiny-mlp over REST (binary tensors) at concurrency 1, 8, 32: requests/s, p50/p90/p99.
2. small-cnn served vs in-process at the same batch size: items/s of each and the ratio.

Client and server are separate processes on the same machine: on a 2-core host they
share the cores, which the results state. Writes benchmarks/results/serve_cpu.json.

    python benchmarks/serve_cpu.py [--duration-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import binary_body, closed_loop, in_process, served, write_result
from inferpack.repository.init import init_repository

SMALL_CNN_BATCH = 8
# This VM speeds up over the first seconds of load (frequency, caches): warm up before timing.
WARMUP_S = 3.0


def _set_small_cnn_policy(repo: Path) -> None:
    """Serve small-cnn with batching off so each request is exactly one batch of 8."""
    path = repo / "small-cnn" / "model.yaml"
    config = yaml.safe_load(path.read_text())
    config.pop("dynamic_batching", None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


async def _measure(url: str, duration_s: float) -> dict[str, object]:
    rng = np.random.default_rng(0)
    body, headers = binary_body("input", rng.standard_normal((1, 16)).astype(np.float32))
    tiny = [
        await closed_loop(
            f"{url}/v2/models/tiny-mlp/infer", body, headers, concurrency=c, duration_s=duration_s
        )
        for c in (1, 8, 32)
    ]
    batch = rng.standard_normal((SMALL_CNN_BATCH, 3, 64, 64)).astype(np.float32)
    body, headers = binary_body("input", batch)
    served_cnn = await closed_loop(
        f"{url}/v2/models/small-cnn/infer", body, headers, concurrency=2, duration_s=duration_s
    )
    return {"tiny": tiny, "small_cnn": served_cnn}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=10.0)
    args = parser.parse_args()
    repo = Path(tempfile.mkdtemp(prefix="inferpack-bench-"))
    try:
        init_repository(repo, ["tiny-mlp", "small-cnn"], seed=0)
        _set_small_cnn_policy(repo)
        batch = (
            np.random.default_rng(0)
            .standard_normal((SMALL_CNN_BATCH, 3, 64, 64))
            .astype(np.float32)
        )
        before = in_process(repo, "small-cnn", batch, args.duration_s, WARMUP_S)
        with served(repo) as url:
            measured = asyncio.run(_measure(url, args.duration_s))
        after = in_process(repo, "small-cnn", batch, args.duration_s, WARMUP_S)
    finally:
        shutil.rmtree(repo)
    served_cnn = measured["small_cnn"]
    in_process_mean = (before["items_per_s"] + after["items_per_s"]) / 2
    served_items = served_cnn["requests_per_s"] * SMALL_CNN_BATCH  # type: ignore[index,operator]
    result = {
        "method": "closed loop, aiohttp keep-alive client in a separate process, binary tensors; "
        "1 s warm-up, then only requests that finish inside the window count; nearest-rank "
        "percentiles. Client and server share the host's cores.",
        "duration_s": args.duration_s,
        "tiny_mlp_rest_binary": measured["tiny"],
        "small_cnn_batch": SMALL_CNN_BATCH,
        "small_cnn_in_process_before_and_after": [before, after],
        "small_cnn_served": {**served_cnn, "items_per_s": round(served_items, 1)},
        "small_cnn_served_over_in_process": round(served_items / in_process_mean, 3),
    }
    path = write_result("serve_cpu.json", result)
    print(path.read_text())


if __name__ == "__main__":
    main()
