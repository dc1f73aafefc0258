"""Run a bench sweep and build its result document (schema: docs/bench-schema.md).

for precision:        load once per instance count; accuracy vs the fp32 reference
                      (fp32 weights, also for a model.yaml with storage_precision)
  for instances:      N data-parallel copies (threads; on CPU the cores are split)
    for batch size:   warm up, measure windows, sample utilisation, optional profile
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


def _measure_one(
    spec: BenchSpec, source: ModelSource, backends: list[Backend], device: str, batch: int
) -> dict[str, Any]:
    inputs = _inputs(source, batch, spec.seed)
    runners = [functools.partial(backend.run, inputs) for backend in backends]
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
    source: ModelSource, reference: Backend, candidate: Backend, spec: BenchSpec
) -> dict[str, object]:
    inputs = _inputs(source, min(ACCURACY_ROWS, source.config.max_batch_size) or 1, spec.seed + 1)
    return compare(reference.run(inputs), candidate.run(inputs))


def run_bench(spec: BenchSpec, progress: Progress | None = None) -> dict[str, Any]:
    """Measure every configuration of ``spec``; return the result document."""
    warnings: list[str] = []
    device = _resolve_device(spec.device)
    results: list[dict[str, Any]] = []
    with model_source(spec) as source:
        storage_precision = source.config.storage_precision
        max_batch = source.config.max_batch_size
        batches = _batch_sizes(spec, max_batch, warnings)
        reference = load_backends(_variant(source, device, "fp32", 1, reference=True))[0]
        for precision in spec.precisions:
            for instances in spec.instances:
                backends = load_backends(_variant(source, device, precision, instances))
                accuracy = _accuracy(source, reference, backends[0], spec)
                for batch in batches:
                    if progress:
                        progress(f"{precision} batch {batch} x{instances}")
                    measured = _measure_one(spec, source, backends, device, batch)
                    results.append({"precision": precision, **measured, "accuracy": accuracy})
                del backends
    _add_cost(spec, results, warnings)
    for result in results:
        if result["noisy"]:
            warnings.append(
                f"noisy: {result['precision']} batch {result['batch_size']} "
                f"x{result['instances']}: repeats differ by {result['throughput_spread_pct']} %"
            )
    return {
        "schema": SCHEMA,
        "spec": {**spec.to_dict(), "device": device, "storage_precision": storage_precision},
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
