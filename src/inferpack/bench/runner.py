"""Run a bench sweep and build its result document (schema: docs/bench-schema.md).

for precision:        load once per instance count; accuracy vs the fp32 reference
                      (fp32 weights, also for a model.yaml with storage_precision)
  for instances:      N data-parallel copies (threads; on CPU the cores are split)
    for compile batch: with --compiled-bucket only: compiled for it, warmed (compiled.py)
      for batch size: warm up, measure windows, sample utilisation, optional profile
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inferpack.backends import Backend, load_backends
from inferpack.bench.accuracy import compare
from inferpack.bench.compiled import compiled_buckets, compiled_variant, default_mode, run_chunked
from inferpack.bench.cost import cost_figures
from inferpack.bench.environment import describe
from inferpack.bench.measure import run_instances, summarise
from inferpack.bench.profile import profile_stages
from inferpack.bench.sampler import UtilisationSampler
from inferpack.bench.spec import SCHEMA, BenchSpec
from inferpack.bench.summary import conditions
from inferpack.config.model_config import InstanceConfig
from inferpack.repository import LocalRepository, ModelSource
from inferpack.workloads import example_inputs

# Rows compared against the fp32 reference (capped by the model's max batch size).
ACCURACY_ROWS = 8
Progress = Callable[[str], None]


@contextmanager
def model_source(spec: BenchSpec) -> Iterator[ModelSource]:
    """The model to measure: a repository model, or a reference workload written to a
    temporary repository with seeded weights."""
    if spec.source == "repository":
        yield LocalRepository(Path(str(spec.repository))).sources(spec.model)[-1]
        return
    from inferpack.repository.init import init_repository

    with tempfile.TemporaryDirectory(prefix="inferpack-bench-") as folder:
        init_repository(Path(folder), [spec.model], seed=spec.seed)
        yield LocalRepository(Path(folder)).sources(spec.model)[-1]


def _variant(
    source: ModelSource, device: str, precision: str, count: int, *, reference: bool = False
) -> ModelSource:
    """``source`` at ``precision`` on ``count`` instances. Weights stay at the model's
    storage_precision where it computes in fp32, except in the ``reference``."""
    storage = None if reference or precision != "fp32" else source.config.storage_precision
    config = dataclasses.replace(
        source.config,
        precision=precision,
        storage_precision=storage,
        instances=InstanceConfig(count=count, device=device),
    )
    return dataclasses.replace(source, config=config)


def _resolve_device(requested: str) -> str:
    from inferpack.backends.torch_backend import resolve_device

    return resolve_device(requested, 0)


@contextmanager
def _cpu_threads(device: str, instances: int) -> Iterator[None]:
    """On CPU, N instances split the cores (intra-op threads per instance)."""
    import torch

    if device != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // instances))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _batch_sizes(spec: BenchSpec, max_batch_size: int, warnings: list[str]) -> list[int]:
    if max_batch_size == 0:
        warnings.append(f"{spec.model} has no batch dimension: measured at batch 1 only")
        return [1]
    kept = [b for b in spec.batch_sizes if b <= max_batch_size]
    skipped = sorted(set(spec.batch_sizes) - set(kept))
    if skipped:
        warnings.append(f"batch sizes {skipped} exceed max_batch_size {max_batch_size}")
    return kept


def _inputs(source: ModelSource, rows: int, seed: int) -> dict[str, Any]:
    """Deterministic inputs of ``rows`` rows (no batch dim for models without one)."""
    inputs = example_inputs(source.config.inputs, rows, seed)
    if not source.config.batching:
        return {name: array[0] for name, array in inputs.items()}
    return inputs


def _runner(backend: Backend, inputs: dict[str, Any], bucket: int | None) -> Callable[[], object]:
    """One batch of ``inputs`` on ``backend``: one call, or calls of ``bucket`` rows."""
    if bucket is None:
        return functools.partial(backend.run, inputs)
    return functools.partial(run_chunked, backend.run, inputs, bucket)


def _measure_one(
    spec: BenchSpec,
    source: ModelSource,
    backends: list[Backend],
    device: str,
    batch: int,
    *,
    bucket: int | None = None,
) -> dict[str, Any]:
    inputs = _inputs(source, batch, spec.seed)
    runners = [_runner(backend, inputs, bucket) for backend in backends]
    instances = len(backends)
    gpu_index = int(device.partition(":")[2] or 0) if device.startswith("cuda") else None
    _peak_reset(device)
    with _cpu_threads(device, instances), UtilisationSampler(gpu_index) as sampler:
        spans = run_instances(runners, spec.warmup_s, spec.duration_s)
    timing = summarise(spans, batch, spec.warmup_s, spec.duration_s, spec.repeats)
    result: dict[str, Any] = {
        "batch_size": batch,
        "instances": instances,
        "samples": {"batch_latency_ms": timing.batch_latency_ms},
        "repeats": timing.repeats,
        "items_per_s": timing.items_per_s,
        "latency_ms": timing.latency_ms,
        "throughput_spread_pct": timing.throughput_spread_pct,
        "noisy": timing.noisy,
        "utilisation": sampler.summary(),
        "peak_device_memory_mb": _peak_mb(device),
        "profile": None,
    }
    if spec.profile:
        stages = profile_stages(getattr(backends[0], "module", None), runners[0], device)
        result["profile"] = {"stages_ms": stages} if stages else None
    return result


def _accuracy(
    source: ModelSource,
    reference: Backend,
    candidate: Backend,
    spec: BenchSpec,
    *,
    bucket: int | None = None,
) -> dict[str, object]:
    inputs = _inputs(source, min(ACCURACY_ROWS, source.config.max_batch_size) or 1, spec.seed + 1)
    outputs = (
        candidate.run(inputs) if bucket is None else run_chunked(candidate.run, inputs, bucket)
    )
    return compare(reference.run(inputs), outputs)


def _load(
    spec: BenchSpec,
    source: ModelSource,
    device: str,
    precision: str,
    count: int,
    *,
    bucket: int | None,
) -> list[Backend]:
    """The backends measured; a compiled bucket is compiled (or captured) here, before any
    timing, by the backend's own warm-up."""
    variant = _variant(source, device, precision, count)
    if bucket is None:
        return load_backends(variant)
    mode = spec.compile_mode or default_mode(device)
    backends = load_backends(compiled_variant(variant, mode, bucket))
    for backend in backends:
        backend.warm_up(_inputs(source, 1, spec.seed))
    return backends


def _sweep(
    spec: BenchSpec,
    source: ModelSource,
    device: str,
    buckets: list[int | None],
    *,
    warnings: list[str],
    progress: Progress | None,
) -> list[dict[str, Any]]:
    """One result per precision x instances x compile batch x batch size."""
    results: list[dict[str, Any]] = []
    batches = _batch_sizes(spec, source.config.max_batch_size, warnings)
    reference = load_backends(_variant(source, device, "fp32", 1, reference=True))[0]
    for precision in spec.precisions:
        for instances in spec.instances:
            for bucket in buckets:
                backends = _load(spec, source, device, precision, instances, bucket=bucket)
                accuracy = _accuracy(source, reference, backends[0], spec, bucket=bucket)
                compiled = {"compiled_bucket": bucket}
                for batch in batches:
                    if progress:
                        where = "" if bucket is None else f" compiled {bucket}"
                        progress(f"{precision} batch {batch} x{instances}{where}")
                    measured = _measure_one(spec, source, backends, device, batch, bucket=bucket)
                    results.append(
                        {"precision": precision, **compiled, **measured, "accuracy": accuracy}
                    )
                del backends
    return results


def _noise_warning(result: dict[str, Any]) -> str:
    bucket = result.get("compiled_bucket")
    compiled = "" if bucket is None else f" compiled {bucket}"
    return (
        f"noisy: {result['precision']} batch {result['batch_size']} "
        f"x{result['instances']}{compiled}: repeats differ by "
        f"{result['throughput_spread_pct']} %"
    )


def run_bench(spec: BenchSpec, progress: Progress | None = None) -> dict[str, Any]:
    """Measure every configuration of ``spec``; return the result document."""
    warnings: list[str] = []
    device = _resolve_device(spec.device)
    mode = (spec.compile_mode or default_mode(device)) if spec.compiled_buckets else None
    with model_source(spec) as source:
        storage_precision = source.config.storage_precision
        buckets: list[int | None] = [None]
        if mode is not None:
            requested = spec.compiled_buckets
            buckets = [*compiled_buckets(requested, mode, source.config, device, warnings)]
        results = _sweep(spec, source, device, buckets, warnings=warnings, progress=progress)
    _add_cost(spec, results, warnings)
    warnings.extend(_noise_warning(result) for result in results if result["noisy"])
    return {
        "schema": SCHEMA,
        "spec": {
            **spec.to_dict(),
            "device": device,
            "storage_precision": storage_precision,
            "compile_mode": mode,
        },
        "environment": describe(device),
        "results": results,
        "summary": conditions(results),
        "warnings": warnings,
    }


def _add_cost(spec: BenchSpec, results: list[dict[str, Any]], warnings: list[str]) -> None:
    price = spec.price_usd_per_hour
    if price is None and spec.instance_type:
        from inferpack.bench.catalog import Catalog

        override = Path(spec.catalog_path) if spec.catalog_path else None
        catalog = Catalog.load(override)
        price = catalog.get(spec.instance_type, spec.region).price_usd_per_hour
    for result in results:
        result["cost"] = cost_figures(result["items_per_s"], price) if price else None
    if price is None:
        warnings.append("no --instance-type or --price-usd-per-hour: costs not computed")
