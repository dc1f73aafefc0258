"""Does one model use the whole machine? [14]'s CNN against its in-process ceiling.

    ceiling = the served model's own backend called in a loop in this process (no HTTP, no
              batcher), torch intra-op threads 1 and every CPU, batch 8 and 32: the best
              items/s per thread count
    served  = inferpack serve with its default settings (small-cnn as `repo init` writes
              it, dynamic batching up to 32 with a 2 ms delay, one instance), a closed loop of
              32 clients in a separate process, one image (1x3x64x64) a request, JSON and
              binary tensors; the server's CPU (its process's CPU seconds / wall seconds)
    ratio   = served req/s / the ceiling on every CPU

The client shares the host's cores with the server (2 on the project's VM), as in [14]'s
measurement; the ceiling has the cores to itself.

    python -m benchmarks.whole_machine [--duration-s 10] [--label NAME] [--serve-arg ARG ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

from benchmarks.common import binary_body, closed_loop, in_process, served, write_result
from inferpack.repository.init import init_repository
from inferpack.runtime.workers import available_cpus

CONCURRENCY = 32
WARMUP_S = 3.0
MAX_DELAY_US = 2000


def ceiling(repo: Path, duration_s: float) -> dict[str, Any]:
    """Items/s of the backend alone, per torch thread count (best of batch 8 and 32)."""
    import torch

    rng = np.random.default_rng(0)
    rows: dict[str, Any] = {}
    for threads in sorted({1, available_cpus()}):
        torch.set_num_threads(threads)
        batches = [rng.standard_normal((b, 3, 64, 64), dtype=np.float32) for b in (8, 32)]
        runs = [in_process(repo, "small-cnn", batch, duration_s, 1.0) for batch in batches]
        best = max(runs, key=lambda r: r["items_per_s"])
        rows[str(threads)] = {"items_per_s": best["items_per_s"], "batch": best["batch"],
                              "runs": runs}  # fmt: skip
    return rows


def json_body(array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    document = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(array.shape),
                            "data": array.ravel().tolist()}]}  # fmt: skip
    return json.dumps(document).encode(), {"Content-Type": "application/json"}


async def measure(url: str, duration_s: float) -> dict[str, Any]:
    image = np.random.default_rng(1).standard_normal((1, 3, 64, 64), dtype=np.float32)
    server = psutil.Process().children()[-1]
    results: dict[str, Any] = {}
    for name, (body, headers) in (("json", json_body(image)),
                                  ("binary", binary_body("input", image))):  # fmt: skip
        target = f"{url}/v2/models/small-cnn/infer"
        await closed_loop(target, body, headers, concurrency=CONCURRENCY, duration_s=WARMUP_S)
        cpu_before, wall_before = sum(server.cpu_times()[:2]), time.perf_counter()
        level = await closed_loop(
            target, body, headers, concurrency=CONCURRENCY, duration_s=duration_s, warmup_s=0
        )
        cpu_s = sum(server.cpu_times()[:2]) - cpu_before
        level["server_cpu_cores"] = round(cpu_s / (time.perf_counter() - wall_before), 3)
        results[name] = level
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--label", default="default")
    parser.add_argument("--serve-arg", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        init_repository(repo, ["small-cnn"], seed=0)
        path = repo / "small-cnn" / "model.yaml"
        config = yaml.safe_load(path.read_text())
        config["dynamic_batching"]["max_queue_delay_us"] = MAX_DELAY_US
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        with served(repo, extra_args=args.serve_arg) as url:
            levels = asyncio.run(measure(url, args.duration_s))
        best = ceiling(repo, min(args.duration_s, 5.0))
    top = best[str(max(int(t) for t in best))]["items_per_s"]
    for level in levels.values():
        level["of_ceiling"] = round(level["requests_per_s"] / top, 3)
    result = {
        "label": args.label,
        "serve_args": args.serve_arg,
        "concurrency": CONCURRENCY,
        "max_queue_delay_us": MAX_DELAY_US,
        "ceiling_items_per_s": best,
        "served": levels,
    }
    out = write_result(f"whole_machine_{args.label}.json", result)
    summary = {k: (v["requests_per_s"], v["of_ceiling"], v["server_cpu_cores"])
               for k, v in levels.items()}  # fmt: skip
    print(f"ceiling {top} items/s; served (req/s, of ceiling, server cores): {summary}; {out}")


if __name__ == "__main__":
    main()
