"""Torch backend: TorchScript (.pt), torch.export (.pt2) and reference workloads.

One loaded module per device. Instance threads call :meth:`TorchBackend.run`; on CUDA each
thread gets its own stream so instances overlap copies and kernels.

Memory (what the LRU budget counts): every distinct tensor storage the module keeps (see
:func:`module_tensors`), plus on CUDA the workspace of a batch of the model's largest size,
measured once at warm-up. Modules are loaded through the weight store
(``tensor_store.py``): weights equal to another loaded model's are held once, and
``shared_weights`` names them so that the budget counts them once.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
import weakref
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from inferpack.backends.base import warmup_inputs
from inferpack.backends.export_program import (
    forget_sources,
    load_program,
    shape_problems,
    shared_graph_module,
)
from inferpack.backends.storage_precision import keep_narrow
from inferpack.backends.tensor_store import (
    ModuleLease,
    Prove,
    TensorStore,
    default_store,
    storage_identity,
)
from inferpack.backends.torch_compile import (
    AotiModule,
    aoti_device,
    eager_module,
    graph_bytes,
    opaque_weight_bytes,
    prepare,
    warm_buckets,
)
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
    """The artifact's module on ``device``, computing at the model's ``precision``, its
    weights kept at ``storage_precision`` when that is set; ready for inference.

    Raises ConfigError where the artifact cannot run as configured (see
    :func:`_load_program`, :func:`_check_script_cast` and ``torch_compile.py``, which
    loads ``torch_aoti`` packages and applies model.yaml's ``compile``)."""
    config = source.config
    if config.platform == "torch_aoti":
        return AotiModule(config, source.artifact_path, device)
    dtype = _TORCH_DTYPE[config.precision]
    module: torch.nn.Module
    if config.platform == "torch_export":
        module = _load_program(source, device, dtype)
    elif config.platform == "torchscript":
        module = torch.jit.load(str(source.artifact_path), map_location=device)
        module = _cast(module.to(device), dtype).eval()
        _check_script_cast(module, dtype, config)
    else:
        module = _cast(_load_workload(source).to(device), dtype).eval()
    if config.storage_precision is not None:
        keep_narrow(module, _TORCH_DTYPE[config.storage_precision], dtype)
    return prepare(module, config, device)


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Floating parameters and buffers to ``dtype``; fp32 leaves the artifact's own."""
    return module if dtype == torch.float32 else module.to(dtype)


def _load_workload(source: ModelSource) -> torch.nn.Module:
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import load_weights

    config = source.config
    spec = get_workload(str(config.workload))
    return load_weights(spec.build(config.workload_options), source.artifact_path)


def _load_program(source: ModelSource, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A ``torch.export`` program as a module on ``device`` at ``dtype``.

    The program's graph is fixed at export, so: its train/eval behaviour is baked in (the
    unlifted module raises on ``.eval()``/``.train()`` and neither is called; a program
    exported in training mode is refused); its constants are plain attributes that
    ``Module.to`` does not move, so the program is moved with torch's
    ``move_to_device_pass``; and a dtype written into the graph (``x.float()``,
    ``torch.full(..., dtype=...)``) cannot follow a cast, so such a program is refused at
    any precision but fp32. Inputs whose exported shapes refuse batches or dimensions that
    model.yaml admits (a static batch dim under ``max_batch_size: 32``) are refused here,
    naming the dimension, rather than failing every batch of two requests with a 500.

    Served as :class:`~inferpack.backends.export_program.SharedGraphModule` (one graph per
    architecture, shared; this model's tensors only); programs that cannot be are unlifted
    with ``.module()``, a graph and its generated code of their own."""
    program, sources = load_program(source.artifact_path, device)
    problems = shape_problems(program, source.config)
    problems += _program_problems(program.graph_module, dtype, source.config)
    if problems:
        forget_sources(sources)
        raise ConfigError(problems)
    shared = shared_graph_module(program, dtype, sources)
    if shared is not None:
        return shared
    module = program.module()
    forget_sources(sources)  # the program's own graph module goes with it
    if dtype != torch.float32:
        module.to(dtype)
        for sub in module.modules():  # lifted constants: plain attributes
            for name, value in list(vars(sub).items()):
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    setattr(sub, name, value.to(dtype))
    return module


# Ops whose boolean argument at this position says "training": batch statistics, dropout.
_TRAINING_FLAGS = {"aten.batch_norm.default": 5, "aten.dropout.default": 2}


def _program_problems(
    graph_module: torch.nn.Module, dtype: torch.dtype, config: ModelConfig
) -> list[str]:
    """Why an exported graph cannot serve ``config``: ops recorded in training mode, and
    floating dtypes fixed in the graph other than ``dtype`` (only checked below fp32)."""
    problems = []
    for sub in graph_module.modules():
        if not isinstance(sub, torch.fx.GraphModule):
            continue
        for node in sub.graph.nodes:
            flag = _TRAINING_FLAGS.get(str(node.target))
            if flag is not None and len(node.args) > flag and node.args[flag] is True:
                problems.append(
                    f"{config.name}: node {node.name} ({node.target}) was exported in "
                    "training mode; call .eval() before torch.export.export"
                )
            fixed = [
                arg
                for arg in (*node.args, *node.kwargs.values())
                if isinstance(arg, torch.dtype) and arg.is_floating_point and arg != dtype
            ]
            if fixed and dtype != torch.float32:
                problems.append(
                    f"{config.name}: precision {config.precision}: node {node.name} "
                    f"({node.target}) fixes dtype {fixed[0]} in the exported graph; export "
                    f"the module at {config.precision}, or serve it at fp32"
                )
    return problems


def _check_script_cast(module: torch.nn.Module, dtype: torch.dtype, config: ModelConfig) -> None:
    """After a cast to ``dtype``: refuse the floating tensors that did not follow, the
    TorchScript graph constants (a frozen module's weights) and unregistered tensor
    attributes that ``Module.to`` does not cast."""
    if dtype == torch.float32:
        return
    stuck = [t for t in module_tensors(module) if t.is_floating_point() and t.dtype != dtype]
    if stuck:
        raise ConfigError(
            [
                f"{config.name}: precision {config.precision}: the TorchScript module keeps "
                f"{len(stuck)} floating tensors as graph constants or attributes (a frozen "
                f"module's weights) that cannot be cast; freeze it at {config.precision}, "
                "or serve it at fp32"
            ]
        )


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
        storages[storage_identity(tensor)] = tensor.untyped_storage().nbytes()
    return sum(storages.values())


def _weigh(module: torch.nn.Module) -> int:
    return storage_bytes(module_tensors(module)) + opaque_weight_bytes(module)


def _tensor_on(array: Tensor, device: str, dtype: torch.dtype) -> torch.Tensor:
    """An input array as a tensor on ``device``; fp32 inputs follow the model's ``dtype``."""
    if array.flags.writeable:
        tensor = torch.from_numpy(array)
    else:
        # A view of the request body: torch warns because it cannot mark the tensor
        # read-only. The buffer is private to this request, so sharing it is safe and
        # saves a copy of every input (19 MB for a batch of 32 images).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(array)
    tensor = tensor.to(device, non_blocking=True)
    if tensor.dtype == torch.float32 and dtype != torch.float32:
        tensor = tensor.to(dtype)
    return tensor


def _prover(config: ModelConfig, device: str) -> Prove | None:
    """The weight store's proof for a module of ``config``: its warm-up inputs through the
    eager module (nothing compiled or captured before the store re-points weights); None
    when model.yaml turns warm-up off."""
    if not config.warmup:
        return None
    inputs = warmup_inputs(config)
    dtype = _TORCH_DTYPE[config.precision]

    def prove(module: torch.nn.Module) -> None:
        args = [_tensor_on(inputs[spec.name], device, dtype) for spec in config.inputs]
        with torch.inference_mode():
            eager_module(module)(*args)

    return prove


def _check_datatypes(config: ModelConfig) -> None:
    problems = [
        f"{config.name}: input {spec.name!r}: torch backends cannot take BYTES"
        for spec in config.inputs
        if spec.datatype == "BYTES"
    ]
    if problems:
        raise ConfigError(problems)


class TorchBackend:
    def __init__(
        self,
        config: ModelConfig,
        module: torch.nn.Module,
        device: str,
        lease: ModuleLease | None = None,
    ) -> None:
        self.config = config
        self.module = module
        self.device = device
        self.dtype = _TORCH_DTYPE[config.precision]
        self.workspace_bytes = 0
        self.weight_bytes = lease.weight_bytes if lease else _weigh(module)
        self.shared_weights: Mapping[str, int] = lease.shared_weights if lease else {}
        # The lease is released at close, or when a backend that never got closed (its
        # model failed to warm up) is collected: the store must not keep it forever.
        self._release = weakref.finalize(self, lease.release) if lease else None
        self._warm_ups: dict[Hashable, int] = lease.warm_ups if lease else {}
        self._streams = threading.local()
        self._output_dtypes = [numpy_dtype(spec.datatype) for spec in config.outputs]

    @classmethod
    def load_instances(
        cls, source: ModelSource, store: TensorStore | None = None
    ) -> list[TorchBackend]:
        """One backend per instance; instances on the same device share one module, and
        models share weights through ``store`` (the process-wide one by default)."""
        store = store or default_store()
        config = source.config
        _check_datatypes(config)
        requested = config.instances.device
        if config.platform == "torch_aoti":  # compiled for one device kind
            requested = aoti_device(config, source.artifact_path)
        by_device: dict[str, TorchBackend] = {}
        instances = []
        for index in range(config.instances.count):
            device = resolve_device(requested, index)
            if device not in by_device:
                by_device[device] = cls._load_on(source, device, store)
            instances.append(by_device[device])
        return instances

    @classmethod
    def _load_on(cls, source: ModelSource, device: str, store: TensorStore) -> TorchBackend:
        """Load through the weight store: a module already loaded from the same bytes with
        the same loading settings is shared whole; otherwise the new module's weights are
        shared tensor by tensor with those already stored. Its warm-up inputs prove which
        of its buffers a forward writes (those are never shared)."""
        key = store.module_key(source, device)
        build = functools.partial(_load_module, source, device)
        lease = store.lease_module(key, build, _weigh, _prover(source.config, device))
        return cls(source.config, lease.module, device, lease)

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
        """:meth:`_warm_up_once`, unless the module (shared whole with other models) was
        already warmed up with inputs and tensor specs like these: then its workspace is
        theirs, and the 3,000th copy of a model loads without running a batch."""
        signature = (
            self.config.inputs,
            self.config.outputs,
            self.config.max_batch_size,
            tuple((name, array.shape, array.dtype.str) for name, array in inputs.items()),
        )
        known = self._warm_ups.get(signature)
        if known is None:
            self._warm_up_once(inputs)
            self._warm_ups[signature] = self.workspace_bytes
        else:
            self.workspace_bytes = max(self.workspace_bytes, known)

    def _warm_up_once(self, inputs: dict[str, Tensor]) -> None:
        """Run ``inputs``; on CUDA then measure the workspace: the peak memory allocated
        while running a batch of the largest size, above what was allocated before.

        CPU has no workspace here: activations are transient heap allocations (benchmarks
        measure them as RSS). CUDA limitation: the peak counters are per device, so
        measurements are serialised, but batches of other models running meanwhile on the
        same device count too (or their frees hide some): an error of at most what they
        allocate during this one batch, which can only be avoided by warming up alone.
        Variable dimensions are as ``inputs`` give them (warm-up uses 1). A compiled module
        is first compiled, or captured, at every bucket (``torch_compile.warm_buckets``)."""
        warm_buckets(self.module, self.config, inputs, self.run)
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
        """``inputs`` (batch 1) repeated to the model's largest bucket, or max batch size."""
        rows = self.config.compile.largest_bucket or self.config.max_batch_size
        if not self.config.batching or rows <= 1:
            return inputs
        return {name: np.repeat(array[:1], rows, axis=0) for name, array in inputs.items()}

    @property
    def memory_bytes(self) -> int:
        return self.weight_bytes + self.workspace_bytes + graph_bytes(self.module)

    def close(self) -> None:
        self.module = torch.nn.Identity()
        if self._release is not None:
            self._release()
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
        return _tensor_on(array, self.device, self.dtype)

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
