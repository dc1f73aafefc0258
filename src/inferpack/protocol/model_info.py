"""Model metadata (KServe v2), model configuration and statistics (Triton extensions) as
plain dicts: REST sends them as JSON, gRPC parses them into the same-named messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inferpack.config.model_config import ModelConfig
from inferpack.config.tensor_spec import TensorSpec
from inferpack.config.triton_json import TRITON_PLATFORM, served_inputs, triton_model_config
from inferpack.errors import NotFoundError
from inferpack.runtime import Engine
from inferpack.runtime.served_model import ServedModel
from inferpack.runtime.statistics import ComputeDurations, Duration


def _metadata_tensor(spec: TensorSpec, batching: bool) -> dict[str, Any]:
    shape = [-1, *spec.dims] if batching else list(spec.dims)
    return {"name": spec.name, "datatype": spec.datatype, "shape": shape}


def model_metadata(config: ModelConfig, versions: Sequence[str]) -> dict[str, Any]:
    return {
        "name": config.name,
        "versions": list(versions),
        "platform": TRITON_PLATFORM[config.platform] or config.platform,
        "inputs": [_metadata_tensor(s, config.batching) for s in served_inputs(config)],
        # The outputs post-processing adds are listed too.
        "outputs": [_metadata_tensor(s, config.batching) for s in config.served_outputs],
    }


def _duration(value: Duration) -> dict[str, int]:
    return {"count": value.count, "ns": value.ns}


def _compute(value: ComputeDurations) -> dict[str, dict[str, int]]:
    return {
        "compute_input": _duration(value.input),
        "compute_infer": _duration(value.infer),
        "compute_output": _duration(value.output),
    }


def _model_statistics(model: ServedModel) -> dict[str, Any]:
    s = model.statistics
    zero = {"count": 0, "ns": 0}  # no response cache: no hits, no misses
    return {
        "name": model.config.name,
        "version": model.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": _duration(s.success),
            "fail": _duration(s.fail),
            "queue": _duration(s.queue),
            **_compute(s.compute),
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": [
            {"batch_size": size, **_compute(value)} for size, value in sorted(s.batches.items())
        ],
    }


def triton_statistics(models: list[ServedModel]) -> dict[str, Any]:
    """Triton's statistics extension body (what perf_analyzer reads for the server split);
    the counting rules are those of :mod:`inferpack.runtime.statistics`."""
    return {"model_stats": [_model_statistics(model) for model in models]}


def triton_statistics_for(engine: Engine, name: str | None, version: str | None) -> dict[str, Any]:
    """Statistics of every loaded model (no name), of one model's loaded versions, or of
    one version. NotFoundError for an unknown model or a version that is not loaded."""
    models = engine.loaded_models(name)
    if name and version:
        models = [m for m in models if m.version == version]
        if not models:
            raise NotFoundError(f"model {name!r} has no loaded version {version!r}")
    return triton_statistics(models)


__all__ = [
    "model_metadata",
    "served_inputs",
    "triton_model_config",
    "triton_statistics",
    "triton_statistics_for",
]
