"""The compiled model, loaded as the server loads it, against the fp32 eager reference.

    candidate = load_backends(compiled source)      # the real loader: what serving runs
    warm_up(batch 1)                                 # load time = load + warm-up
    for bucket in buckets:                           # one seeded batch of each size
        compare(reference(batch), candidate(batch))  # bench.accuracy metrics
    overall = compare over all rows of all buckets   # what the tolerance judges

A model without a batch dim is checked on one example.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inferpack.backends import Backend, load_backends
from inferpack.bench.accuracy import compare
from inferpack.compile.spec import CompileError
from inferpack.config.model_config import ModelConfig
from inferpack.errors import InferpackError
from inferpack.repository import ModelSource
from inferpack.types import Tensor
from inferpack.workloads import example_inputs

BucketDone = Callable[[int], None]


def seeded_batch(config: ModelConfig, rows: int, seed: int) -> dict[str, Tensor]:
    """Deterministic inputs (bench's); no batch dim for a model without one."""
    inputs = example_inputs(config.inputs, max(rows, 1), seed)
    return inputs if config.batching else {name: array[0] for name, array in inputs.items()}


def load_candidate(source: ModelSource, seed: int) -> tuple[Backend, float]:
    """The compiled model through the server's loader, warmed up; and seconds it took."""
    began = time.perf_counter()
    try:
        backend = load_backends(source)[0]
        backend.warm_up(seeded_batch(source.config, 1, seed))
    except InferpackError as error:
        raise CompileError(f"the compiled model does not load: {error}") from None
    except Exception as error:  # the engine's own errors (ORT, torch)
        reason = str(error).splitlines()[0] if str(error) else ""
        raise CompileError(
            f"the compiled model does not load: {type(error).__name__}: {reason}"
        ) from None
    return backend, time.perf_counter() - began


def check(
    reference: Backend,
    candidate: Backend,
    config: ModelConfig,
    *,
    buckets: Sequence[int],
    seed: int,
    on_bucket: BucketDone | None = None,
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Per-bucket metrics and the metrics over all rows (module docstring)."""
    sizes = list(buckets) or [0]  # 0: a model without a batch dim
    per_bucket: list[dict[str, object]] = []
    refs: list[dict[str, Tensor]] = []
    cands: list[dict[str, Tensor]] = []
    for index, size in enumerate(sizes):
        inputs = seeded_batch(config, size, seed + 1 + index)
        ref, cand = reference.run(inputs), candidate.run(inputs)
        per_bucket.append({"batch_size": size, **compare(ref, cand)})
        refs.append(ref)
        cands.append(cand)
        if on_bucket is not None:
            on_bucket(size)
    return per_bucket, compare(_pooled(refs, config), _pooled(cands, config))


def _pooled(outputs: list[dict[str, Tensor]], config: ModelConfig) -> dict[str, Any]:
    if not config.batching:
        return outputs[0]
    return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}
