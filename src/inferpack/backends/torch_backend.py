"""Torch backend: TorchScript (.pt), torch.export (.pt2) and reference workloads.

One loaded module per device. Instance threads call :meth:`TorchBackend.run`; on CUDA each
thread gets its own stream so instances overlap copies and kernels.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from inferpack.config.model_config import ModelConfig
from inferpack.datatypes import numpy_dtype
from inferpack.errors import ConfigError
from inferpack.repository import ModelSource
from inferpack.types import Tensor

_TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        self.weight_bytes = sum(
            t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())
        )
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
        """Peak device memory of one batch above the weights is the workspace (CUDA only:
        on CPU activations are transient heap allocations, measured as RSS by benchmarks)."""
        if not self.device.startswith("cuda"):
            self.run(inputs)
            return
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.run(inputs)
        torch.cuda.synchronize(self.device)
        workspace = torch.cuda.max_memory_allocated(self.device) - before
        self.workspace_bytes = max(self.workspace_bytes, workspace)

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
