"""ONNX Runtime backend: platform ``onnx`` (a user's ``model.onnx``, or what
``inferpack compile --mode onnx`` writes).

One ``InferenceSession`` per device, shared by the model's instances on that device:
``InferenceSession.run`` is thread-safe, so instance threads call it concurrently without a
lock and the weights are held once.

At load the graph's inputs and outputs are checked against model.yaml (names, element
types, ranks and fixed dims) and every mismatch is reported in one ConfigError. The graph
runs as exported: ``precision`` does not cast it, it must agree with the graph's floating
tensors (a graph exported at fp16 declares FP16 tensors and ``precision: fp16``).

Memory (what the LRU budget counts): the bytes of the graph's initializers and constants,
read from the file without loading external data (the file size where ``onnx`` is absent).
ORT keeps its own copy of those (pre-packed kernels may add a little). Activations are not
counted: the CPU arena is disabled, so they are transient heap allocations freed after each
run (as for torch on CPU); ORT gives no way to measure a CUDA arena per session, so on CUDA
the workspace is not counted either (docs/onnx.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from inferpack.config.model_config import ModelConfig
from inferpack.config.tensor_spec import TensorSpec
from inferpack.datatypes import numpy_dtype
from inferpack.errors import ConfigError
from inferpack.repository import ModelSource
from inferpack.types import Tensor

CPU_PROVIDER: Final = "CPUExecutionProvider"
CUDA_PROVIDER: Final = "CUDAExecutionProvider"
# One intra-op thread per session: the server already runs W worker threads that each call
# ``run`` (runtime/workers.py), and ORT's intra-op pool is per session, so T > 1 would give
# every loaded model T - 1 threads of its own (thousands of models, thousands of threads).
# With 1, ORT computes on the calling worker thread and starts no pool. A server that plans
# T > 1 threads per batch passes ``intra_op_threads`` to :meth:`OnnxBackend.load_instances`.
DEFAULT_INTRA_OP_THREADS: Final = 1

_V2_BY_ONNX: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
# The ONNX element type of floating tensors a graph computing at each precision has.
_FLOAT_TYPE_BY_PRECISION: Final = {
    "fp32": "tensor(float)",
    "fp16": "tensor(float16)",
    "bf16": "tensor(bfloat16)",
}
_FLOAT_TYPES: Final = frozenset({*_FLOAT_TYPE_BY_PRECISION.values(), "tensor(double)"})


def resolve_device(requested: str, instance_index: int) -> str:
    """cpu / cuda:N as given; cuda and auto spread instances round-robin over the GPUs
    ONNX Runtime sees (auto falls back to cpu without the CUDA provider or a GPU). The
    semantics of ``torch_backend.resolve_device``, without torch."""
    gpus = _cuda_device_count()
    if requested == "cpu" or requested.startswith("cuda:"):
        if requested.startswith("cuda:") and not gpus:
            raise ConfigError([_no_cuda(requested)])
        return requested
    if gpus:
        return f"cuda:{instance_index % gpus}"
    if requested == "cuda":
        raise ConfigError([_no_cuda(requested)])
    return "cpu"


def _no_cuda(requested: str) -> str:
    available = ", ".join(ort.get_available_providers())
    return (
        f"device {requested} requested but onnxruntime has no {CUDA_PROVIDER} with a GPU "
        f"(available providers: {available}); install onnxruntime-gpu"
    )


def _cuda_device_count() -> int:
    """GPUs the CUDA provider can use: 0 without the provider. ORT < 1.22 cannot list
    devices: one GPU is assumed there, and the session's providers are checked at load."""
    if CUDA_PROVIDER not in ort.get_available_providers():
        return 0
    list_devices = getattr(ort, "get_ep_devices", None)
    if list_devices is None:
        return 1
    return sum(1 for device in list_devices() if device.ep_name == CUDA_PROVIDER)


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # ORT's pool threads spin-wait for work after each op by default: on a small host they
    # would burn the cores the other models' batches (and the event loop) need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # No per-session arena: activations are freed after each run instead of being kept at
    # the largest batch's size by every loaded model (module docstring).
    options.enable_cpu_mem_arena = False
    return options


def _providers(device: str) -> list[Any]:
    if device == "cpu":
        return [CPU_PROVIDER]
    return [(CUDA_PROVIDER, {"device_id": int(device.partition(":")[2])}), CPU_PROVIDER]


def _open_session(path: Path, device: str, intra_op_threads: int) -> ort.InferenceSession:
    session = ort.InferenceSession(
        str(path), session_options(intra_op_threads), providers=_providers(device)
    )
    if device != "cpu" and session.get_providers()[0] != CUDA_PROVIDER:
        raise ConfigError([_no_cuda(device)])
    return session


def graph_problems(config: ModelConfig, session: ort.InferenceSession) -> list[str]:
    """Every way the session's graph disagrees with model.yaml: names, element types,
    ranks and dims of inputs and outputs, and ``precision``."""
    problems = _side_problems(config, "input", config.inputs, session.get_inputs())
    problems += _side_problems(config, "output", config.outputs, session.get_outputs())
    graph_inputs = {arg.name for arg in session.get_inputs()}
    problems += [
        f"{config.name}: graph input {name!r} is not in model.yaml inputs (every graph input "
        "must be fed)"
        for name in sorted(graph_inputs - {spec.name for spec in config.inputs})
    ]
    if config.storage_precision is not None:
        problems.append(
            f"{config.name}: storage_precision is not available for platform onnx (the graph "
            "runs with the weights it was exported with)"
        )
    return problems


def _side_problems(
    config: ModelConfig, side: str, specs: Sequence[TensorSpec], args: Sequence[Any]
) -> list[str]:
    by_name = {arg.name: arg for arg in args}
    problems = []
    for spec in specs:
        arg = by_name.get(spec.name)
        where = f"{config.name}: {side} {spec.name!r}"
        if arg is None:
            problems.append(f"{where}: not in the ONNX graph ({side}s: {sorted(by_name)})")
            continue
        problems += [f"{where}: {problem}" for problem in _tensor_problems(config, spec, arg)]
    return problems


def _tensor_problems(config: ModelConfig, spec: TensorSpec, arg: Any) -> Iterator[str]:
    graph_type = _V2_BY_ONNX.get(arg.type, arg.type)
    if spec.datatype == "BYTES":
        # ORT's string tensors hold text: it would feed str(b"...") for each bytes element.
        yield "datatype: BYTES is not served by platform onnx"
    elif graph_type != spec.datatype:
        yield f"datatype: model.yaml says {spec.datatype}, the graph has {graph_type}"
    wanted = _FLOAT_TYPE_BY_PRECISION[config.precision]
    if config.precision != "fp32" and arg.type in _FLOAT_TYPES and arg.type != wanted:
        yield (
            f"precision {config.precision}: the graph has {graph_type}; ONNX graphs run as "
            f"exported: export at {config.precision} or serve at fp32"
        )
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
    expected = [-1, *spec.dims] if config.batching else list(spec.dims)
    if len(dims) != len(expected):
        yield (
            f"shape: rank {len(dims)} in the graph ({_show(arg.shape)}), model.yaml implies "
            f"{len(expected)} ({_show(expected)}"
            f"{', batch dim first' if config.batching else ''})"
        )
        return
    if config.batching and dims[0] > 0 and _batch_sizes(config) != {dims[0]}:
        yield (
            f"shape: the graph fixes the batch dim at {dims[0]}, max_batch_size "
            f"{config.max_batch_size} runs other sizes; export with a dynamic batch dim"
        )
    offset = 1 if config.batching else 0
    for index, (graph_dim, yaml_dim) in enumerate(zip(dims[offset:], spec.dims, strict=True)):
        if graph_dim > 0 and graph_dim != yaml_dim:
            yield (
                f"shape: dim {index + offset} is {graph_dim} in the graph, {yaml_dim} in "
                f"model.yaml ({_show(arg.shape)} vs {_show(expected)})"
            )


def _batch_sizes(config: ModelConfig) -> set[int]:
    """The batch sizes a model runs at: its buckets, else 1 .. max_batch_size."""
    return set(config.compile.batch_buckets or range(1, config.max_batch_size + 1))


def _show(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def weight_bytes(path: Path) -> int:
    """Bytes of the graph's initializers and Constant tensors (external data included, not
    read); the artifact's file size without the ``onnx`` package."""
    try:
        import onnx
        from onnx import helper
    except ImportError:
        return path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    tensors = list(model.graph.initializer)
    tensors += [
        attribute.t
        for node in model.graph.node
        if node.op_type == "Constant"
        for attribute in node.attribute
        if attribute.name == "value"
    ]
    total = 0
    for tensor in tensors:
        count = int(np.prod(tensor.dims, dtype=np.int64))
        total += count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return total


class OnnxBackend:
    """A model's ONNX Runtime session on one device (see the module docstring)."""

    def __init__(
        self, config: ModelConfig, session: ort.InferenceSession, device: str, weights: int
    ) -> None:
        self.config = config
        self.session: ort.InferenceSession | None = session
        self.device = device
        self.weight_bytes = weights
        self._output_names = config.output_names()
        self._input_dtypes = {spec.name: numpy_dtype(spec.datatype) for spec in config.inputs}

    @classmethod
    def load_instances(
        cls, source: ModelSource, intra_op_threads: int = DEFAULT_INTRA_OP_THREADS
    ) -> list[OnnxBackend]:
        """One backend per instance; instances on the same device share one session."""
        config = source.config
        weights = weight_bytes(source.artifact_path)
        by_device: dict[str, OnnxBackend] = {}
        instances = []
        for index in range(config.instances.count):
            device = resolve_device(config.instances.device, index)
            if device not in by_device:
                session = _open_session(source.artifact_path, device, intra_op_threads)
                problems = graph_problems(config, session)
                if problems:
                    raise ConfigError(problems)
                by_device[device] = cls(config, session, device, weights)
            instances.append(by_device[device])
        return instances

    @property
    def memory_bytes(self) -> int:
        return self.weight_bytes

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.session is None:
            raise RuntimeError(f"model {self.config.name!r}: session is closed")
        feed = {
            name: np.ascontiguousarray(array, dtype=self._input_dtypes[name])
            for name, array in inputs.items()
        }
        outputs = self.session.run(self._output_names, feed)
        return dict(zip(self._output_names, outputs, strict=True))

    def warm_up(self, inputs: dict[str, Tensor]) -> None:
        """Run ``inputs`` (batch 1), then the largest batch (largest bucket, else
        max_batch_size) once: kernels are chosen and buffers planned per shape."""
        self.run(inputs)
        rows = self.config.compile.largest_bucket or self.config.max_batch_size
        if self.config.batching and rows > 1:
            self.run({name: np.repeat(array[:1], rows, axis=0) for name, array in inputs.items()})

    def close(self) -> None:
        self.session = None  # ORT frees the session's memory when it is collected


__all__ = ["OnnxBackend", "graph_problems", "resolve_device", "weight_bytes"]
