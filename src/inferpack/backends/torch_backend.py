"""Torch backend: TorchScript (.pt), torch.export (.pt2) and reference workloads.

One loaded module per device. Instance threads call :meth:`TorchBackend.run`; on CUDA each
thread gets its own stream so instances overlap copies and kernels.

Memory (what the LRU budget counts): every distinct tensor storage the module keeps (see
:func:`module_tensors`), plus on CUDA the workspace of a batch of the model's largest size,
measured once at warm-up.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from inferpack.config.model_config import ModelConfig
from inferpack.datatypes import numpy_dtype
from inferpack.errors import ConfigError
from inferpack.repository import ModelSource
from inferpack.types import Tensor

_TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# CUDA peak-memory counters are per device, not per model: one measurement at a time.
_MEASURE_LOCK = threading.Lock()


def resolve_device(requested: str, instance_index: int) -> str:
    """cpu / cuda:N as given; cuda and auto spread instances round-robin over GPUs."""
    if requested == "cpu" or requested.startswith("cuda:"):
        if requested.startswith("cuda:") and not torch.cuda.is_available():
            raise ConfigError([f"device {requested} requested but CUDA is not available"])
        return requested
    if torch.cuda.is_available():
        return f"cuda:{instance_index % torch.cuda.device_count()}"
    if requested == "cuda":
        raise ConfigError(["device cuda requested but CUDA is not available"])
    return "cpu"


def _load_module(source: ModelSource, device: str) -> torch.nn.Module:
    config = source.config
    path = source.artifact_path
    if config.platform == "torchscript":
        module: torch.nn.Module = torch.jit.load(str(path), map_location=device)
    elif config.platform == "torch_export":
        module = torch.export.load(str(path)).module()
    else:
        from inferpack.workloads import get_workload
        from inferpack.workloads.weights import load_weights

        module = load_weights(
            get_workload(str(config.workload)).build(config.workload_options), path
        )
    return module


def module_tensors(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Every tensor a loaded module keeps: parameters, buffers, plain tensor attributes
    (torch.export lifts constants into those) and, for TorchScript, tensor attributes and
    the constants of its graphs: a frozen module has no parameters, its weights are
    constants of its graph."""
    yield from module.parameters()
    yield from module.buffers()
    for sub in module.modules():
        yield from (value for value in vars(sub).values() if isinstance(value, torch.Tensor))
        if isinstance(sub, torch.jit.ScriptModule):
            yield from _script_tensors(sub)


def _script_tensors(module: torch.jit.ScriptModule) -> Iterator[torch.Tensor]:
    scripted = module._c
    for method in scripted._method_names():
        for node in scripted._get_method(method).graph.findAllNodes("prim::Constant"):
            value = node.output()
            if isinstance(value.type(), torch._C.TensorType):
                yield value.toIValue()
    # The one listing of a ScriptModule's attributes (tensors not registered as buffers).
    attributes = getattr(torch._C, "_jit_debug_module_iterators", None)
    if attributes is not None:
        for _, value in attributes(scripted)["named_attributes"]:
            if isinstance(value, torch.Tensor):
                yield value


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``: a storage shared by several
    tensors (tied weights, views, one constant used twice) counts once."""
    storages: dict[tuple[str, int], int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def _check_datatypes(config: ModelConfig) -> None:
    problems = [
        f"{config.name}: input {spec.name!r}: torch backends cannot take BYTES"
        for spec in config.inputs
        if spec.datatype == "BYTES"
    ]
    if problems:
        raise ConfigError(problems)


class TorchBackend:
    def __init__(self, config: ModelConfig, module: torch.nn.Module, device: str) -> None:
        self.config = config
        self.module = module
        self.device = device
        self.dtype = _TORCH_DTYPE[config.precision]
        self.workspace_bytes = 0
        self.weight_bytes = storage_bytes(module_tensors(module))
        self._streams = threading.local()
        self._output_dtypes = [numpy_dtype(spec.datatype) for spec in config.outputs]

    @classmethod
    def load_instances(cls, source: ModelSource) -> list[TorchBackend]:
        """One backend per instance; instances on the same device share one module."""
        _check_datatypes(source.config)
        by_device: dict[str, TorchBackend] = {}
        instances = []
        for index in range(source.config.instances.count):
            device = resolve_device(source.config.instances.device, index)
            if device not in by_device:
                by_device[device] = cls._load_on(source, device)
            instances.append(by_device[device])
        return instances

    @classmethod
    def _load_on(cls, source: ModelSource, device: str) -> TorchBackend:
        module = _load_module(source, device).to(device)
        if source.config.precision != "fp32":
            module = module.to(_TORCH_DTYPE[source.config.precision])
        module.eval()
        return cls(source.config, module, device)

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.inference_mode(), self._stream_context():
            args = [self._to_device(inputs[spec.name]) for spec in self.config.inputs]
            raw = self.module(*args)
            outputs = self._as_sequence(raw)
            return {
                spec.name: self._to_numpy(tensor, dtype)
                for spec, tensor, dtype in zip(
                    self.config.outputs, outputs, self._output_dtypes, strict=True
                )
            }

    def warm_up(self, inputs: dict[str, Tensor]) -> None:
        """Run ``inputs``; on CUDA then measure the workspace: the peak memory allocated
        while running a batch of the largest size, above what was allocated before.

        CPU has no workspace here: activations are transient heap allocations (benchmarks
        measure them as RSS). CUDA limitation: the peak counters are per device, so
        measurements are serialised, but batches of other models running meanwhile on the
        same device count too (or their frees hide some): an error of at most what they
        allocate during this one batch, which can only be avoided by warming up alone.
        Variable dimensions are as ``inputs`` give them (warm-up uses 1)."""
        self.run(inputs)
        if not self.device.startswith("cuda"):
            return
        largest = self._largest_batch(inputs)
        with _MEASURE_LOCK:
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.run(largest)
            torch.cuda.synchronize(self.device)
            workspace = torch.cuda.max_memory_allocated(self.device) - before
        self.workspace_bytes = max(self.workspace_bytes, workspace)

    def _largest_batch(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """``inputs`` (batch 1) repeated to the model's max batch size."""
        rows = self.config.max_batch_size
        if not self.config.batching or rows <= 1:
            return inputs
        return {name: np.repeat(array[:1], rows, axis=0) for name, array in inputs.items()}

    @property
    def memory_bytes(self) -> int:
        return self.weight_bytes + self.workspace_bytes

    def close(self) -> None:
        self.module = torch.nn.Identity()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _stream_context(self) -> Any:
        if not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        stream = getattr(self._streams, "stream", None)
        if stream is None:
            stream = torch.cuda.Stream(device=self.device)
            self._streams.stream = stream
        return torch.cuda.stream(stream)

    def _to_device(self, array: Tensor) -> torch.Tensor:
        if array.flags.writeable:
            tensor = torch.from_numpy(array)
        else:
            # A view of the request body: torch warns because it cannot mark the tensor
            # read-only. The buffer is private to this request, so sharing it is safe and
            # saves a copy of every input (19 MB for a batch of 32 images).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.from_numpy(array)
        tensor = tensor.to(self.device, non_blocking=True)
        if tensor.dtype == torch.float32 and self.dtype != torch.float32:
            tensor = tensor.to(self.dtype)  # fp32 inputs follow the model's precision
        return tensor

    def _as_sequence(self, raw: Any) -> Sequence[torch.Tensor]:
        if isinstance(raw, torch.Tensor):
            raw = (raw,)
        elif isinstance(raw, dict):
            raw = tuple(raw[name] for name in self.config.output_names())
        elif hasattr(raw, "to_tuple"):
            raw = raw.to_tuple()
        if len(raw) != len(self.config.outputs):
            raise RuntimeError(
                f"model {self.config.name!r} returned {len(raw)} outputs, "
                f"model.yaml declares {len(self.config.outputs)}"
            )
        return tuple(raw)

    @staticmethod
    def _to_numpy(tensor: torch.Tensor, dtype: np.dtype[np.generic]) -> Tensor:
        if tensor.dtype in (torch.bfloat16, torch.float16) and dtype != np.float16:
            tensor = tensor.float()
        array: Tensor = tensor.cpu().numpy()
        return array if array.dtype == dtype else array.astype(dtype)
