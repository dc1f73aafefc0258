"""Model metadata (KServe v2) and model configuration (Triton extension) as plain dicts."""

from __future__ import annotations

from typing import Any

from inferpack.config.model_config import ModelConfig, TensorSpec
from inferpack.runtime.manager import ModelEntry
from inferpack.runtime.served_model import ServedModel
from inferpack.runtime.statistics import Duration

# Triton's model-configuration names for our platforms (clients such as perf_analyzer
# read `backend` / `platform` only to display them).
_TRITON_PLATFORM = {
    "torchscript": "pytorch_libtorch",
    "torch_export": "pytorch_export",
    "workload": "pytorch_workload",
}


def _metadata_tensor(spec: TensorSpec, batching: bool) -> dict[str, Any]:
    shape = [-1, *spec.dims] if batching else list(spec.dims)
    return {"name": spec.name, "datatype": spec.datatype, "shape": shape}


def model_metadata(entry: ModelEntry, config: ModelConfig) -> dict[str, Any]:
    return {
        "name": config.name,
        "versions": sorted(entry.versions, key=int),
        "platform": _TRITON_PLATFORM[config.platform],
        "inputs": [_metadata_tensor(s, config.batching) for s in config.inputs],
        "outputs": [_metadata_tensor(s, config.batching) for s in config.outputs],
    }


def _config_tensor(spec: TensorSpec) -> dict[str, Any]:
    datatype = "STRING" if spec.datatype == "BYTES" else spec.datatype
    return {"name": spec.name, "data_type": f"TYPE_{datatype}", "dims": list(spec.dims)}


def triton_model_config(config: ModelConfig) -> dict[str, Any]:
    """The subset of Triton's ModelConfig that clients and perf_analyzer read."""
    result: dict[str, Any] = {
        "name": config.name,
        "platform": _TRITON_PLATFORM[config.platform],
        "backend": "pytorch",
        "max_batch_size": config.max_batch_size,
        "input": [_config_tensor(s) for s in config.inputs],
        "output": [_config_tensor(s) for s in config.outputs],
        "instance_group": [
            {
                "count": config.instances.count,
                "kind": "KIND_CPU" if config.instances.device == "cpu" else "KIND_AUTO",
            }
        ],
    }
    if config.dynamic_batching is not None:
        batching = config.dynamic_batching
        result["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "default_queue_policy": {"max_queue_size": batching.max_queue_size},
        }
    return result


def _duration(value: Duration) -> dict[str, int]:
    return {"count": value.count, "ns": value.ns}


def triton_statistics(models: list[ServedModel]) -> dict[str, Any]:
    """Triton's statistics extension body (what perf_analyzer reads for the server split).
    Input and output copies are timed inside compute_infer, so those two stay zero."""
    zero = {"count": 0, "ns": 0}
    stats = []
    for model in models:
        s = model.statistics
        stats.append(
            {
                "name": model.config.name,
                "version": model.version,
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": _duration(s.success),
                    "fail": _duration(s.fail),
                    "queue": _duration(s.queue),
                    "compute_input": zero,
                    "compute_infer": _duration(s.compute_infer),
                    "compute_output": zero,
                    "cache_hit": zero,
                    "cache_miss": zero,
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": zero,
                        "compute_infer": _duration(value),
                        "compute_output": zero,
                    }
                    for size, value in sorted(s.batches.items())
                ],
            }
        )
    return {"model_stats": stats}
