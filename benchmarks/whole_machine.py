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
        [--py-spy] [--instances N] [--torchscript] [--max-batch-size N]

--torchscript serves the same network traced and frozen as TorchScript (platform
torchscript, model.pt) instead of the eager workload: its forward runs in C++ without
taking the GIL between ops.

With --py-spy, py-spy samples the server (every thread, idle included) through the binary
level and the result has where its threads' time went: the share of each thread's samples
in each stage, by the frames on the stack (``STAGES``); the raw samples are written beside
the JSON (``whole_machine_<label>.collapsed``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

from benchmarks.common import (
    ROOT,
    binary_body,
    closed_loop,
    collapsed_samples,
    in_process,
    py_spy_record,
    served,
    write_result,
)
from inferpack.repository.init import init_repository
from inferpack.runtime.workers import available_cpus

RESULTS = ROOT / "benchmarks" / "results"
CONCURRENCY = 32
# A stack's stage: the first of these whose marker is in it (frames from the leaf up).
STAGES = (
    ("model compute", ("forward", "_conv_forward", "run (inferpack/backends")),
    ("batch join / split", ("_run_batch", "pad_rows", "_split_outputs")),
    ("decode request", ("decode_infer_request", "v2_codec", "read_body", "json_data")),
    ("encode response", ("encode", "json_text", "tensors_json")),
    ("batcher / engine", ("batching/", "runtime/engine", "served_model", "manager")),
    ("HTTP (aiohttp)", ("aiohttp/",)),
    (
        "idle: waiting for work",
        ("select (selectors", "_worker (concurrent", "wait (threading", "epoll", "_poll"),
    ),
)
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


def to_torchscript(folder: Path, config: dict[str, Any]) -> None:
    """The workload's network traced and frozen into ``1/model.pt``; config edited in place."""
    import torch

    from inferpack.workloads import get_workload

    module = get_workload("small-cnn").build(config.pop("workload_options")).eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.zeros(1, 3, 64, 64))  # type: ignore[no-untyped-call]
        traced = torch.jit.freeze(traced)
    (folder / "1" / "model.safetensors").unlink()
    traced.save(str(folder / "1" / "model.pt"))
    config.pop("workload")
    config["platform"] = "torchscript"


def json_body(array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    document = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(array.shape),
                            "data": array.ravel().tolist()}]}  # fmt: skip
    return json.dumps(document).encode(), {"Content-Type": "application/json"}


def stage_of(stack: str) -> str:
    for stage, markers in STAGES:
        if any(marker in stack for marker in markers):
            return stage
    return "other"


def summarise(collapsed: Path) -> dict[str, Any]:
    """Per thread: its share of all samples, and each stage's share of its own samples."""
    threads: dict[str, dict[str, int]] = {}
    for stack, count in collapsed_samples(collapsed):
        thread = stack.split(";", 1)[0]
        name = thread.split("(", 1)[-1].rstrip(")") if "(" in thread else thread
        stages = threads.setdefault(name, {})
        stage = stage_of(stack)
        stages[stage] = stages.get(stage, 0) + count
    total = sum(sum(s.values()) for s in threads.values()) or 1
    return {
        name: {
            "share_of_samples": round(sum(stages.values()) / total, 3),
            "stages": {k: round(v / sum(stages.values()), 3)
                       for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
        }
        for name, stages in sorted(threads.items(), key=lambda kv: -sum(kv[1].values()))
    }  # fmt: skip


def stats(url: str) -> dict[int, tuple[int, int]]:
    """Batch size -> (executions, compute ns) from the server's statistics extension."""
    with urllib.request.urlopen(f"{url}/v2/models/small-cnn/stats", timeout=30) as answer:
        document = json.loads(answer.read())
    rows = document["model_stats"][0]["batch_stats"]
    return {int(r["batch_size"]): (int(r["compute_infer"]["count"]),
                                   int(r["compute_infer"]["ns"])) for r in rows}  # fmt: skip


def per_image_ms(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> Any:
    """The level's batches: executions, images and compute ms per image, overall and for
    the batch sizes that ran most."""
    sizes = []
    for size, (count, ns) in after.items():
        old_count, old_ns = before.get(size, (0, 0))
        if count > old_count:
            sizes.append((size, count - old_count, ns - old_ns))
    images = sum(size * n for size, n, _ in sizes)
    top = sorted(sizes, key=lambda row: -row[1])[:4]
    return {
        "compute_ms_per_image": round(sum(ns for *_, ns in sizes) / max(images, 1) / 1e6, 3),
        "batches": sum(n for _, n, _ in sizes),
        "most_run": [
            {"batch_size": size, "batches": n, "ms_per_image": round(ns / n / size / 1e6, 3)}
            for size, n, ns in top
        ],
    }


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


async def measure(url: str, duration_s: float, spy: Path | None = None) -> dict[str, Any]:
    image = np.random.default_rng(1).standard_normal((1, 3, 64, 64), dtype=np.float32)
    server = psutil.Process().children()[-1]
    results: dict[str, Any] = {}
    for name, (body, headers) in (("json", json_body(image)),
                                  ("binary", binary_body("input", image))):  # fmt: skip
        target = f"{url}/v2/models/small-cnn/infer"
        await closed_loop(target, body, headers, concurrency=CONCURRENCY, duration_s=WARMUP_S)
        cpu_before, wall_before = sum(server.cpu_times()[:2]), time.perf_counter()
        batches_before, machine_before = stats(url), cpu_jiffies()
        sampler = None
        if spy is not None and name == "binary":
            sampler = py_spy_record(
                server.pid, duration_s, spy, "--idle", "--threads", "--nonblocking"
            )
        level = await closed_loop(
            target, body, headers, concurrency=CONCURRENCY, duration_s=duration_s, warmup_s=0
        )
        if sampler is not None and spy is not None:
            sampler.wait(timeout=60)
            level["py_spy"] = summarise(spy)
        cpu_s = sum(server.cpu_times()[:2]) - cpu_before
        busy, total = (b - a for a, b in zip(machine_before, cpu_jiffies(), strict=True))
        level["machine_busy_share"] = round(busy / max(total, 1), 3)
        level["server_batches"] = per_image_ms(batches_before, stats(url))
        level["server_cpu_cores"] = round(cpu_s / (time.perf_counter() - wall_before), 3)
        results[name] = level
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--label", default="default")
    parser.add_argument("--serve-arg", action="append", default=[])
    parser.add_argument("--py-spy", action="store_true")
    parser.add_argument("--instances", type=int, default=None, help="the model's instance count")
    parser.add_argument("--torchscript", action="store_true")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="the model's max_batch_size (default: as repo init writes it)",
    )
    args = parser.parse_args()
    spy = RESULTS / f"whole_machine_{args.label}.collapsed" if args.py_spy else None
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        init_repository(repo, ["small-cnn"], seed=0)
        path = repo / "small-cnn" / "model.yaml"
        config = yaml.safe_load(path.read_text())
        config["dynamic_batching"]["max_queue_delay_us"] = MAX_DELAY_US
        if args.instances:
            config["instances"]["count"] = args.instances
        if args.max_batch_size:
            config["max_batch_size"] = args.max_batch_size
        if args.torchscript:
            to_torchscript(repo / "small-cnn", config)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        with served(repo, extra_args=args.serve_arg) as url:
            levels = asyncio.run(measure(url, args.duration_s, spy))
        best = ceiling(repo, min(args.duration_s, 5.0))
    top = best[str(max(int(t) for t in best))]["items_per_s"]
    for level in levels.values():
        level["of_ceiling"] = round(level["requests_per_s"] / top, 3)
    result = {
        "label": args.label,
        "max_batch_size": config["max_batch_size"],
        "serve_args": args.serve_arg,
        "instances": args.instances or config["instances"]["count"],
        "platform": config["platform"],
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
