"""``inferpack compile`` on CPU: eager vs onnx vs inductor vs export (AOTInductor), fp32.

For each model (a seeded ``repo init`` workload in a temporary repository): compile it in
each mode through :func:`inferpack.compile.run.compile_model` (what the CLI runs, with a
private cache so that nothing is reused), then load every variant with the server's loader
and measure it with bench's timing loop (one instance, batches back to back): latency at
batch 1 and the best throughput over the batch sizes, with the compile time, the load time
and the accuracy against fp32 eager from the compile report.

    python -m benchmarks.compile_cpu [--models small-cnn,resnet50] [--duration-s 5]

Writes benchmarks/results/compile_cpu.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from inferpack.backends import load_backends
from inferpack.bench.measure import run_instances, summarise
from inferpack.compile.accuracy_check import seeded_batch
from inferpack.compile.cache import CompileCache
from inferpack.compile.run import compile_model
from inferpack.compile.spec import CompileSpec
from inferpack.repository import LocalRepository
from inferpack.repository.init import init_repository

MODES = ("onnx", "inductor", "export")
BATCH_SIZES = (1, 8, 32)
# resnet50 at batch 32 takes seconds per batch on a 2-core VM: smaller batches, same method.
BATCH_SIZES_BY_MODEL = {"resnet50": (1, 4, 8)}
REPEATS = 3


class _Print:
    def stage(self, text: str) -> None:
        print(f"  {text}", flush=True)

    def bucket(self, batch_size: int, total: int) -> None:
        print(f"  checked batch {batch_size}", flush=True)


def _measure(repo: Path, model: str, duration_s: float) -> dict[str, Any]:
    """Latency at batch 1 and throughput per batch size of the model's latest version."""
    source = LocalRepository(repo).sources(model)[-1]
    backend = load_backends(source)[0]
    backend.warm_up(seeded_batch(source.config, 1, 0))
    per_batch = []
    for batch in BATCH_SIZES_BY_MODEL.get(model.split("-", 1)[0], BATCH_SIZES):
        if batch > source.config.max_batch_size:
            continue
        run = functools.partial(backend.run, seeded_batch(source.config, batch, 0))
        spans = run_instances([run], warmup_s=min(1.0, duration_s / 3), duration_s=duration_s)
        timing = summarise(spans, batch, min(1.0, duration_s / 3), duration_s, REPEATS)
        per_batch.append(
            {
                "batch_size": batch,
                "items_per_s": timing.items_per_s,
                "latency_ms": timing.latency_ms,
                "noisy": timing.noisy,
            }
        )
    backend.close()
    best = max(per_batch, key=lambda row: float(row["items_per_s"]))
    return {
        "batch1_latency_p50_ms": per_batch[0]["latency_ms"]["p50"],
        "best_items_per_s": best["items_per_s"],
        "best_batch_size": best["batch_size"],
        "batches": per_batch,
    }


def _one_model(model: str, duration_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="compile-bench-") as folder:
        repo, cache = Path(folder) / "repo", CompileCache(Path(folder) / "cache")
        repo.mkdir()
        init_repository(repo, [model], seed=0)
        print(f"{model}: eager", flush=True)
        variants: dict[str, Any] = {"eager": _measure(repo, model, duration_s)}
        for mode in MODES:
            print(f"{model}: {mode}", flush=True)
            buckets = BATCH_SIZES_BY_MODEL.get(model, BATCH_SIZES)
            spec = CompileSpec(repo, model, mode=mode, batch_buckets=buckets)
            result = compile_model(spec, _Print(), cache)
            report = result.report
            variants[mode] = {
                **_measure(repo, result.model, duration_s),
                "compile_s": report["compile_s"],
                "load_s": report["load_s"],
                "exporter": report["exporter"],
                "accuracy": report["overall"],
                "within_tolerance": report["within_tolerance"],
            }
        return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small-cnn,resnet50")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--output", default="compile_cpu.json")
    args = parser.parse_args()
    results = {model: _one_model(model, args.duration_s) for model in args.models.split(",")}
    out = write_result(
        args.output,
        {
            "benchmark": "compile_cpu",
            "precision": "fp32",
            "batch_sizes": {m: list(BATCH_SIZES_BY_MODEL.get(m, BATCH_SIZES)) for m in results},
            "duration_s": args.duration_s,
            "models": results,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
