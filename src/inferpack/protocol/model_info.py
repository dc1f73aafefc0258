"""Model metadata (KServe v2), model configuration and statistics (Triton extensions) as
plain dicts: REST sends them as JSON, gRPC parses them into the same-named messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inferpack.config.model_config import ModelConfig
from inferpack.config.tensor_spec import TensorSpec
from inferpack.errors import NotFoundError
from inferpack.runtime import Engine
from inferpack.runtime.served_model import ServedModel
from inferpack.runtime.statistics import ComputeDurations, Duration

# Triton's model-configuration names for our platforms (clients such as perf_analyzer
# read `backend` / `platform` only to display them).
_TRITON_PLATFORM = {
    "torchscript": "pytorch_libtorch",
    "torch_export": "pytorch_export",
    "workload": "pytorch_workload",
    "torch_aoti": "torch_aoti",
    "onnx": "onnxruntime_onnx",
}


def _metadata_tensor(spec: TensorSpec, batching: bool) -> dict[str, Any]:
    shape = [-1, *spec.dims] if batching else list(spec.dims)
    return {"name": spec.name, "datatype": spec.datatype, "shape": shape}


def served_inputs(config: ModelConfig) -> tuple[TensorSpec, ...]:
    """What a client may send: the model's tensors and, for a model with ``preprocess``,
    its upload input (BYTES, sent instead of the tensors). Metadata and the configuration
    list the same inputs, in this order; the configuration marks them optional when there
    is an upload input (Triton's ``optional``: perf_analyzer then sends only the inputs its
    ``--input-data`` gives)."""
    upload = config.upload_input
    return config.inputs if upload is None else (*config.inputs, upload)


def model_metadata(config: ModelConfig, versions: Sequence[str]) -> dict[str, Any]:
    return {
        "name": config.name,
        "versions": list(versions),
        "platform": _TRITON_PLATFORM[config.platform],
        "inputs": [_metadata_tensor(s, config.batching) for s in served_inputs(config)],
        # The outputs post-processing adds are listed too.
        "outputs": [_metadata_tensor(s, config.batching) for s in config.served_outputs],
    }


def _config_tensor(spec: TensorSpec) -> dict[str, Any]:
    datatype = "STRING" if spec.datatype == "BYTES" else spec.datatype
    return {"name": spec.name, "data_type": f"TYPE_{datatype}", "dims": list(spec.dims)}


def _config_inputs(config: ModelConfig) -> list[dict[str, Any]]:
    inputs = [_config_tensor(s) for s in served_inputs(config)]
    if config.upload_input is not None:  # sent instead of the tensors: both are optional
        inputs = [{**tensor, "optional": True} for tensor in inputs]
    return inputs


def _config_outputs(config: ModelConfig) -> list[dict[str, Any]]:
    outputs = [_config_tensor(s) for s in config.served_outputs]
    classification = config.postprocess.classification
    if classification is not None and classification.labels:
        for tensor in outputs:
            if tensor["name"] == classification.output:
                tensor["label_filename"] = classification.labels
    return outputs


def triton_model_config(config: ModelConfig) -> dict[str, Any]:
    """The subset of Triton's ModelConfig that clients and perf_analyzer read."""
    result: dict[str, Any] = {
        "name": config.name,
        "platform": _TRITON_PLATFORM[config.platform],
        "backend": "pytorch",
        "max_batch_size": config.max_batch_size,
        "input": _config_inputs(config),
        "output": _config_outputs(config),
        "instance_group": [
            {
                "count": config.instances.count,
                "kind": "KIND_CPU" if config.instances.device == "cpu" else "KIND_AUTO",
            }
        ],
        # One response per request (perf_analyzer reads this to choose its stream mode).
        "model_transaction_policy": {"decoupled": False},
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
