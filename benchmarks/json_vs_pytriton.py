"""small-cnn over KServe v2 JSON at concurrency 32: inferpack vs NVIDIA Triton (PyTriton).

The same TorchScript file (small-cnn, seed 0, traced here) is served by both, each with
dynamic batching up to 32 rows, a 2 ms queue delay, one instance and one torch thread;
the same load generator (``inferpack loadtest --no-binary --concurrency 32``) drives each,
alternating A B A B so drift hits both. Each request is an 85 KB JSON body (3x64x64 FP32).

Needs a second venv with nvidia-pytriton and torch (default /tmp/pyt):
    python3 -m venv /tmp/pyt && /tmp/pyt/bin/pip install nvidia-pytriton==0.7.0 torch==2.13.0
    .venv/bin/python -m benchmarks.json_vs_pytriton [--pytriton-python /tmp/pyt/bin/python]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import ROOT, loadtest_level, served, started, write_result
from benchmarks.loadtest_pytriton import _free_port

CONCURRENCY = 32
MAX_BATCH = 32
DELAY_US = 2000
REPEATS = 2


def build_repository(root: Path) -> Path:
    """cnn/1/model.pt (TorchScript of small-cnn, seed 0) and its model.yaml."""
    import torch

    from inferpack.workloads import get_workload

    spec = get_workload("small-cnn")
    module = spec.build({"seed": 0}).eval()
    folder = root / "cnn" / "1"
    folder.mkdir(parents=True)
    with torch.inference_mode():
        traced = torch.jit.trace(module, torch.zeros(1, 3, 64, 64))
    traced.save(str(folder / "model.pt"))
    config = {
        "name": "cnn",
        "platform": "torchscript",
        "max_batch_size": MAX_BATCH,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 64, 64]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [10]}],
        "dynamic_batching": {"max_queue_delay_us": DELAY_US},
        "instances": {"count": 1, "device": "cpu"},
    }
    (folder.parent / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "model.pt"


def loadtest(url: str) -> dict[str, Any]:
    arguments = ["--model", "cnn", "--no-binary", "--concurrency", str(CONCURRENCY)]
    timing = ["--duration-s", "15", "--warmup-s", "3", "--max-windows", "6"]
    level = loadtest_level(url, [*arguments, *timing], 300)
    return {
        "throughput_rps": level["throughput_rps"],
        "latency_ms": level["latency_ms"],
        "errors": level["errors"],
        "stable": level["stable"],
    }


@contextlib.contextmanager
def running_pytriton(python: str, model: Path, *arguments: str) -> Iterator[tuple[str, str]]:
    """PyTriton serving the TorchScript file ``model`` (benchmarks/pytriton_cnn_server.py,
    more ``arguments`` after the batching ones); yields its HTTP and gRPC host:port."""
    http, grpc = _free_port(), _free_port()
    command = [
        python,
        str(ROOT / "benchmarks" / "pytriton_cnn_server.py"),
        "--model",
        str(model),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--max-batch",
        str(MAX_BATCH),
        "--delay-us",
        str(DELAY_US),
        *arguments,
    ]
    os.environ["PYTHONPATH"] = str(ROOT)
    with started(command, "ready"):
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"


def run_pytriton(python: str, model: Path) -> dict[str, Any]:
    with running_pytriton(python, model) as (http, _):
        return loadtest(f"http://{http}")


def run_inferpack(repo: Path) -> dict[str, Any]:
    with served(repo, extra_args=["--cpu-threads", "1"]) as url:
        return loadtest(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pytriton-python", default="/tmp/pyt/bin/python")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"inferpack": [], "pytriton": []}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        model = build_repository(repo)
        for _ in range(REPEATS):
            runs["pytriton"].append(run_pytriton(args.pytriton_python, model))
            runs["inferpack"].append(run_inferpack(repo))
    best = {name: max(r["throughput_rps"] for r in rows) for name, rows in runs.items()}
    mean = {
        name: round(sum(r["throughput_rps"] for r in rows) / len(rows), 1)
        for name, rows in runs.items()
    }
    result = {
        "model": "small-cnn (TorchScript, seed 0), FP32 [3,64,64], JSON body ~85 KB",
        "setup": {
            "max_batch": MAX_BATCH,
            "max_queue_delay_us": DELAY_US,
            "instances": 1,
            "torch_threads": 1,
            "load": f"inferpack loadtest --no-binary --concurrency {CONCURRENCY}",
        },
        "runs": runs,
        "best_throughput_rps": best,
        "mean_throughput_rps": mean,
        "inferpack_vs_pytriton": round(best["inferpack"] / best["pytriton"], 3),
        "inferpack_vs_pytriton_mean": round(mean["inferpack"] / mean["pytriton"], 3),
    }
    path = write_result("json_vs_pytriton.json", result)
    print(json.dumps(best), f"\nwrote {path}")


if __name__ == "__main__":
    main()
