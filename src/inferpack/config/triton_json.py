"""Triton's model configuration as JSON (the ``model_configuration`` extension's body, and
what a Triton python-backend model's ``initialize`` reads as ``args["model_config"]``)."""

from __future__ import annotations

from typing import Any

from inferpack.config.model_config import ModelConfig, model_config_to_dict, parse_model_config
from inferpack.config.tensor_spec import TensorSpec
from inferpack.errors import ConfigError

# Triton's model-configuration names for our platforms (clients such as perf_analyzer
# read `backend` / `platform` only to display them).
TRITON_PLATFORM = {
    "torchscript": "pytorch_libtorch",
    "torch_export": "pytorch_export",
    "workload": "pytorch_workload",
    "torch_aoti": "torch_aoti",
    "onnx": "onnxruntime_onnx",
    "python": "",  # Triton names a python model by its backend only
}
TRITON_BACKEND = {"onnx": "onnxruntime", "python": "python"}  # others: "pytorch"


def served_inputs(config: ModelConfig) -> tuple[TensorSpec, ...]:
    """What a client may send: the model's tensors and, for a model with ``preprocess``,
    its upload input (BYTES, sent instead of the tensors). Metadata and the configuration
    list the same inputs, in this order; the configuration marks them optional when there
    is an upload input (Triton's ``optional``: perf_analyzer then sends only the inputs its
    ``--input-data`` gives)."""
    upload = config.upload_input
    return config.inputs if upload is None else (*config.inputs, upload)


def _config_tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": triton_datatype(spec.datatype), "dims": list(spec.dims)}


def triton_datatype(datatype: str) -> str:
    """A v2 datatype as Triton's config names it: ``FP32`` -> ``TYPE_FP32``; BYTES is
    Triton's ``TYPE_STRING``."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def v2_datatype(triton_type: str) -> str:
    """The inverse of :func:`triton_datatype` (``TYPE_STRING`` -> ``BYTES``)."""
    name = triton_type.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


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
        "platform": TRITON_PLATFORM[config.platform],
        "backend": TRITON_BACKEND.get(config.platform, "pytorch"),
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
    if config.parameters:
        result["parameters"] = {k: {"string_value": v} for k, v in config.parameters.items()}
    if config.dynamic_batching is not None:
        batching = config.dynamic_batching
        result["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "default_queue_policy": {"max_queue_size": batching.max_queue_size},
        }
    return result


def completed_config(config: ModelConfig, data: dict[str, Any], source: str) -> ModelConfig:
    """``config`` with what a python model's ``auto_complete_config`` set in ``data``
    (Triton's JSON): max_batch_size, inputs, outputs, dynamic batching; validated as a
    model.yaml is. A decoupled transaction policy is refused, as in a config.pbtxt."""
    if data.get("model_transaction_policy", {}).get("decoupled"):
        raise ConfigError(
            [f"{source}: auto_complete_config asks for a decoupled (streaming) model, which "
             "inferpack does not serve"]
        )  # fmt: skip
    raw = model_config_to_dict(config)
    raw["max_batch_size"] = data.get("max_batch_size", 0)
    raw["inputs"] = [_yaml_tensor(t) for t in data.get("input", [])]
    raw["outputs"] = [_yaml_tensor(t) for t in data.get("output", [])]
    batching = data.get("dynamic_batching")
    if isinstance(batching, dict) and config.dynamic_batching is None:
        raw["dynamic_batching"] = {
            "max_queue_delay_us": int(batching.get("max_queue_delay_microseconds", 0)),
            "preferred_batch_sizes": [int(s) for s in batching.get("preferred_batch_size", [])],
        }
    return parse_model_config(raw, f"{source} (after auto_complete_config)", config.name)


def _yaml_tensor(tensor: Any) -> dict[str, Any]:
    if not isinstance(tensor, dict):
        return {"name": None}  # parse_model_config names the problem
    dims = tensor.get("dims", [])
    return {
        "name": tensor.get("name"),
        "datatype": v2_datatype(str(tensor.get("data_type", ""))),
        "shape": [int(d) for d in dims] if isinstance(dims, list) else dims,
    }
