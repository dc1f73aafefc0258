"""Compiled torch models: AOTInductor packages, torch.compile per bucket, CUDA graphs.

Each is an ``nn.Module`` wrapping what it runs, so the weight store, the memory accounting
and :class:`~inferpack.backends.torch_backend.TorchBackend` treat it as any loaded module:

* :class:`AotiModule` (platform ``torch_aoti``): a ``torch.export`` + AOTInductor package
  (``model.pt2``) run by ``torch._inductor.aoti_load_package``: no Python model class and
  no compiler at load. Its weights live inside the compiled library, out of reach of the
  store: they are weighed from the package (:func:`package_constants`).
* :class:`BucketCompiledModule` (``compile.mode: inductor``): ``torch.compile`` with
  static shapes, one graph per bucket, all compiled at warm-up before the model is READY.
  Mode ``default``, not ``max-autotune-no-cudagraphs``: autotuning benchmarks GEMM
  configurations per shape and bucket, minutes of warm-up for a model that loads on
  demand (LRU), for a few percent on GPU and nothing on CPU. Other batch sizes (the
  runtime pads to buckets, so only a caller bypassing it) run the eager module: a serving
  thread never stalls on a compile. Without buckets: one ``dynamic=True`` compile, warmed
  at 1 and at ``max_batch_size`` (torch specialises size 1 apart).
* :class:`CudaGraphModule` (``compile.mode: cudagraphs``): one CUDA graph per bucket
  with static input and output buffers. A batch smaller than a bucket is padded into the
  next bucket's buffers (its outputs sliced back); one over the largest runs eagerly.
* :class:`ChannelsLast` (``compile.channels_last``): 4-D inputs and the module's weights
  in channels-last layout (faster convolutions on tensor cores and oneDNN).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inferpack.config.compile_config import TORCH_MODULE_PLATFORMS
from inferpack.config.model_config import ModelConfig
from inferpack.errors import ConfigError
from inferpack.types import Tensor

log = logging.getLogger(__name__)

# What AOTInductor writes in the generated wrapper for each constant (weights included).
_CONSTANT_SIZE = re.compile(rb"constants_info_\[\d+\]\.data_size = (\d+);")
_CONSTANT_DTYPE = re.compile(rb"constants_info_\[\d+\]\.dtype = cached_torch_dtype_(\w+);")
_PRECISION_OF = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_RECOMPILE_LIMIT = 64  # compiled shapes per model class: buckets x precisions x devices
_CUDA_GRAPH_WARM_RUNS = 3  # before capture: lazy CUDA/cuDNN init and autotuning stay out


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """What an AOTInductor package declares: its device kind (``cpu``/``cuda``), the bytes
    of its constants, and the precisions of its floating constants."""

    device: str
    constant_bytes: int
    precisions: frozenset[str]


def package_constants(path: Path) -> PackageInfo:
    """Read ``path`` (a zip) without loading it. Constants are weighed from the generated
    wrapper sources the package ships (``constants_info_[i].data_size``: the bytes
    AOTInductor allocates for each at load); a package without them is weighed by its
    compiled libraries, an upper bound (code included)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        metadata: dict[str, str] = {}
        for name in (n for n in names if n.endswith("_metadata.json")):
            metadata.update(json.loads(archive.read(name)))
        sources = [archive.read(n) for n in names if n.endswith(".wrapper.cpp")]
        libraries = sum(archive.getinfo(n).file_size for n in names if n.endswith(".so"))
    sizes = [int(size) for source in sources for size in _CONSTANT_SIZE.findall(source)]
    dtypes = {dtype.decode() for source in sources for dtype in _CONSTANT_DTYPE.findall(source)}
    return PackageInfo(
        device=metadata.get("AOTI_DEVICE_KEY", "cpu"),
        constant_bytes=sum(sizes) if sources else libraries,
        precisions=frozenset(_PRECISION_OF[d] for d in dtypes if d in _PRECISION_OF),
    )


def aoti_device(config: ModelConfig, path: Path) -> str:
    """The device to ask for: the package's kind for ``auto``; otherwise the configured
    one, refused where it is not the kind the package was compiled for."""
    compiled = package_constants(path).device
    requested = config.instances.device
    if requested == "auto":
        return compiled
    if requested.partition(":")[0] != compiled:
        raise ConfigError(
            [
                f"{config.name}: instances.device is {requested} but {path.name} was "
                f"compiled for {compiled}; compile it for {requested} or set device "
                f"{compiled}"
            ]
        )
    return requested


class AotiModule(nn.Module):
    """An AOTInductor package on one device. It has no parameters: its constants are
    inside the loaded library (``constant_bytes`` weighs them)."""

    def __init__(self, config: ModelConfig, path: Path, device: str) -> None:
        super().__init__()
        info = package_constants(path)
        problems = _aoti_problems(config, info)
        if problems:
            raise ConfigError(problems)
        index = torch.device(device).index
        self.constant_bytes = info.constant_bytes
        self._runner = torch._inductor.aoti_load_package(
            str(path), device_index=-1 if index is None else index
        )

    def forward(self, *args: torch.Tensor) -> Any:
        return self._runner(*args)


def _aoti_problems(config: ModelConfig, info: PackageInfo) -> list[str]:
    """Precision is baked into a package: model.yaml must ask for the one it has."""
    problems = []
    if config.storage_precision is not None:
        problems.append(
            f"{config.name}: storage_precision is not available for torch_aoti (the "
            "weights are inside the compiled package); compile it at the precision wanted"
        )
    wrong = sorted(info.precisions - {config.precision})
    if wrong:
        problems.append(
            f"{config.name}: precision {config.precision}, but the package was compiled "
            f"with {', '.join(wrong)} weights; set precision {wrong[0]} or recompile it"
        )
    return problems


def opaque_weight_bytes(module: nn.Module) -> int:
    """Weights a module keeps out of reach of ``module_tensors`` (AOTI constants)."""
    return sum(sub.constant_bytes for sub in module.modules() if isinstance(sub, AotiModule))


def prepare(module: nn.Module, config: ModelConfig, device: str) -> nn.Module:
    """``module`` as model.yaml's ``compile`` asks: channels-last, then compiled (lazily:
    :func:`warm_buckets` compiles or captures before the model is READY)."""
    compile_config = config.compile
    problems = _compile_problems(config, device)
    if problems:
        raise ConfigError(problems)
    if compile_config.channels_last:
        # Module.to takes memory_format; torch's overloads omit it.
        module = ChannelsLast(module.to(memory_format=torch.channels_last))  # type: ignore[call-overload]
    if compile_config.mode == "inductor":
        return BucketCompiledModule(module, compile_config.batch_buckets)
    if compile_config.mode == "cudagraphs":
        return CudaGraphModule(module, compile_config.batch_buckets)
    return module


def _compile_problems(config: ModelConfig, device: str) -> list[str]:
    compile_config, problems = config.compile, []
    if compile_config.mode == "cudagraphs" and not device.startswith("cuda"):
        problems.append(
            f"{config.name}: compile.mode cudagraphs needs a CUDA device, but this instance "
            f"runs on {device} (instances.device {config.instances.device})"
        )
    if compile_config.channels_last:
        if config.platform not in TORCH_MODULE_PLATFORMS:
            problems.append(
                f"{config.name}: compile.channels_last needs platform workload or "
                f"torch_export, not {config.platform}"
            )
        if not any(len(spec.dims) + config.batching == 4 for spec in config.inputs):
            problems.append(f"{config.name}: compile.channels_last needs a 4-D input (N, C, H, W)")
    return problems


class ChannelsLast(nn.Module):
    """Runs ``module`` (its weights already channels-last) on channels-last 4-D inputs."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: torch.Tensor) -> Any:
        return self.module(*(_channels_last(a) for a in args))


def _channels_last(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


class BucketCompiledModule(nn.Module):
    """``torch.compile`` of ``module``: static shapes per bucket, or dynamic without."""

    def __init__(self, module: nn.Module, buckets: Sequence[int]) -> None:
        super().__init__()
        self.module = module
        self.buckets = frozenset(buckets)
        # Static shapes: Dynamo compiles one entry per bucket on the model class's forward,
        # shared by every model of that class (weights are graph inputs); past its limit
        # (8) it would silently run eagerly. Raised once, never lowered.
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = max(dynamo.recompile_limit, _RECOMPILE_LIMIT)
        self.compiled = torch.compile(module, dynamic=not buckets)

    def forward(self, *args: torch.Tensor) -> Any:
        if self.buckets and args and args[0].shape[0] not in self.buckets:
            return self.module(*args)  # never a compile while serving
        return self.compiled(*args)


@dataclass(slots=True)
class _Graph:
    """One captured bucket: replays are serialised (one set of static buffers), and the
    next replay on any stream waits for the last one's outputs to be copied out."""

    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: Any
    done: torch.cuda.Event
    lock: threading.Lock = field(default_factory=threading.Lock)


class CudaGraphModule(nn.Module):
    """``module`` replayed from one CUDA graph per bucket, captured on first use (at
    warm-up). Each graph has a private memory pool (``graph_bytes`` counts the pools)."""

    def __init__(self, module: nn.Module, buckets: Sequence[int]) -> None:
        super().__init__()
        self.module = module
        self.buckets = tuple(buckets)
        self.graph_bytes = 0
        self._graphs: dict[int, _Graph] = {}
        self._capture_lock = threading.Lock()

    def forward(self, *args: torch.Tensor) -> Any:
        rows = args[0].shape[0]
        bucket = next((b for b in self.buckets if b >= rows), None)
        if bucket is None:
            return self.module(*args)
        graph = self._graphs.get(bucket) or self._capture(bucket, args)
        if any(
            s.shape[1:] != a.shape[1:] or s.dtype != a.dtype
            for s, a in zip(graph.inputs, args, strict=True)
        ):
            return self.module(*args)  # variable dims other than the captured ones
        stream = torch.cuda.current_stream(args[0].device)
        with graph.lock:
            stream.wait_event(graph.done)
            for static, arg in zip(graph.inputs, args, strict=True):
                static[:rows].copy_(arg)
            graph.graph.replay()
            out = torch.utils._pytree.tree_map(lambda t: t[:rows].clone(), graph.outputs)
            graph.done.record(stream)
        return out

    def _capture(self, bucket: int, args: Sequence[torch.Tensor]) -> _Graph:
        """Warm runs on a side stream, then capture; the bytes it holds from then on (static
        buffers and its pool, reserved: intermediates freed inside a private pool stay
        reserved for it) are added to ``graph_bytes``."""
        with self._capture_lock:
            if bucket in self._graphs:
                return self._graphs[bucket]
            device = args[0].device
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_reserved(device)
            static = [_pad_rows(a, bucket) for a in args]
            side = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(_CUDA_GRAPH_WARM_RUNS):
                    self.module(*static)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                outputs = self.module(*static)
            torch.cuda.synchronize(device)
            self.graph_bytes += max(0, torch.cuda.memory_reserved(device) - before)
            done = torch.cuda.Event()  # type: ignore[no-untyped-call]
            captured = _Graph(graph, static, outputs, done)
            captured.done.record(torch.cuda.current_stream(device))
            self._graphs[bucket] = captured
            return captured


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """A ``rows``-row copy of ``tensor`` (its rows repeated): a static input buffer."""
    repeats = [-(-rows // tensor.shape[0])] + [1] * (tensor.dim() - 1)
    return tensor.repeat(*repeats)[:rows].clone()


def eager_module(module: nn.Module) -> nn.Module:
    """What ``module`` runs without compiling or capturing (a run of it never compiles a
    graph, nor captures one that a later re-pointed weight would leave stale)."""
    while isinstance(module, BucketCompiledModule | CudaGraphModule):
        module = module.module
    return module


def graph_bytes(module: nn.Module) -> int:
    """Memory held by the CUDA graphs captured in ``module``."""
    return sum(sub.graph_bytes for sub in module.modules() if isinstance(sub, CudaGraphModule))


def warm_buckets(
    module: nn.Module,
    config: ModelConfig,
    inputs: dict[str, Tensor],
    run: Callable[[dict[str, Tensor]], object],
) -> None:
    """Compile (inductor) or capture (cudagraphs) every batch size the model will run at,
    largest first, logging each one's seconds: all before the model is READY."""
    if not any(isinstance(m, BucketCompiledModule | CudaGraphModule) for m in module.modules()):
        return
    for rows in _warm_sizes(config):
        batch = (
            inputs if rows is None else {n: np.repeat(a[:1], rows, 0) for n, a in inputs.items()}
        )
        start = time.perf_counter()
        run(batch)
        log.info(
            "%s: compile.mode %s: batch %s warmed in %.2f s",
            config.name,
            config.compile.mode,
            "as given" if rows is None else rows,
            time.perf_counter() - start,
        )


def _warm_sizes(config: ModelConfig) -> Sequence[int | None]:
    """Buckets, largest first; without: ``max_batch_size`` and 1 (a dynamic compile
    specialises size 1 apart); without a batch dim, the inputs as given (``None``)."""
    if not config.batching:
        return [None]
    sizes = config.compile.batch_buckets or {1, max(1, config.max_batch_size)}
    return sorted(sizes, reverse=True)
