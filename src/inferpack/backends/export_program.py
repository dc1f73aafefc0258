"""``torch.export`` programs served as one shared graph plus each model's own tensors.

Why. ``ExportedProgram.module()`` unlifts a program into a GraphModule of its own: its fx
graph, the node metadata (fake tensors, stack traces), the Python code generated from the
graph, and four more generated sources that torch.fx keeps forever in its linecache
loader. For medium-cnn (1.85 MiB of weights) that was 2.35 MiB resident per model (1.27 x),
and every load/unload cycle leaked its six sources; served as below, 1.90 MiB (1.03 x), and
churn leaves nothing (docs/model-memory.md, benchmarks/format_memory.py).
Per-customer models of one architecture have the same graph; only their weights differ.
So::

    load:   program = torch.export.load(path)       # the sources it generates are noted
            key = hash(code of its lifted graph modules, graph signature, in/out specs,
                       user input shapes, range constraints)       # never the weights
            template = templates[key] or, first of its kind, the program's lifted graph
            model = SharedGraphModule(template, its parameters, buffers and constants)
            the program is dropped; the sources its load generated are forgotten, but the
            template's own, and so are torch's memos of its ShapeEnv
    run:    template.graph_module(*model's tensors, *flattened inputs) -> unflattened

The lifted graph (``program.graph_module``) takes the parameters, buffers and lifted
constants as leading inputs, so calling it is a pure function: no attribute is swapped
while a batch runs (unlike ``torch.func.functional_call``), and any number of threads may
run models sharing one template at once. Templates are held by the models using them only
(a weak-valued table finds them), so one goes, with its generated source, when the last
model using it is collected.

What a model keeps: one ``nn.Module`` whose parameters and buffers are registered under the
program's placeholder names and whose lifted constants are plain attributes, as in the
module ``.module()`` gives; so the weight store, ``storage_precision`` (which reads them
through ``getattr`` and widens them on read) and the memory accounting
(``torch_backend.module_tensors``) see the same tensors as before. The template is
counted nowhere: it holds no tensors, and it is one per architecture, not per model.

Behaviour equals ``.module()``'s: the same aten graph runs on the same tensors; inputs are
checked against the in-spec and the exported shapes and ranges (torch's own checks; a
batch outside the exported range is refused as before); a buffer the graph updates in
place (training dialect) is the model's own, as in the unlifted module. Programs this
cannot serve (mutations returned for the caller to write back, effect tokens, custom
objects, tensors kept on the graph module) give ``None``: the caller unlifts them.
"""

from __future__ import annotations

import hashlib
import linecache
import math
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.graph_module import _loader

from inferpack.config.model_config import ModelConfig

# Loads are serialised so that the sources torch.fx generates while one program is loaded
# are known to be that load's (torch.export.load runs under the GIL nearly throughout).
_LOAD_LOCK = threading.Lock()
_TEMPLATES_LOCK = threading.Lock()
_TEMPLATES: weakref.WeakValueDictionary[str, GraphTemplate] = weakref.WeakValueDictionary()
_STATE_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


def load_program(path: Path, device: str) -> tuple[ExportedProgram, frozenset[str]]:
    """The program at ``path`` on ``device`` (``move_to_device_pass``: it moves the lifted
    constants, which ``Module.to`` would leave behind), and the keys of the sources torch.fx
    generated while loading it: pass them to :func:`shared_graph_module`, or to
    :func:`forget_sources` once the program's graph modules are dropped."""
    from torch.export.passes import move_to_device_pass

    with _LOAD_LOCK:
        before = set(_loader.eval_cache)
        program = move_to_device_pass(torch.export.load(str(path)), device)
        generated = frozenset(set(_loader.eval_cache) - before)
        _clear_shape_env_caches()
    return program, generated


def _clear_shape_env_caches() -> None:
    """Empty the memo caches that torch keeps on ``ShapeEnv`` methods for every instance.

    Each load deserialises the program with a ShapeEnv of its own; ``constrain_symbol_range``
    is memoised without bound (``_inner_evaluate_expr`` up to 256 calls) keyed by that
    ShapeEnv, which with its fake-tensor cache (~30 KiB for medium-cnn) then lives as long
    as the process. Memos only: what is cleared is recomputed when next asked for."""
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    for name in ("constrain_symbol_range", "_inner_evaluate_expr"):
        clear = getattr(getattr(ShapeEnv, name, None), "cache_clear", None)
        if clear is not None:
            clear()


def forget_sources(keys: Iterable[str]) -> None:
    """Drop generated sources from torch.fx's loader and ``linecache``: only tracebacks
    read them, and torch.fx never does, so each dropped graph module's stayed forever."""
    for key in keys:
        _loader.eval_cache.pop(key, None)
        linecache.cache.pop(key, None)


class GraphTemplate:
    """One lifted graph, run by every loaded model whose program has that graph."""

    def __init__(self, key: str, program: ExportedProgram) -> None:
        self.key = key
        self.graph_module = program.graph_module
        self.in_spec: pytree.TreeSpec = program.call_spec.in_spec
        self.out_spec: pytree.TreeSpec = program.call_spec.out_spec
        self.user_inputs = [
            node
            for node, spec in zip(
                self.graph_module.graph.find_nodes(op="placeholder"),
                program.graph_signature.input_specs,
                strict=True,
            )
            if spec.kind == InputKind.USER_INPUT
        ]
        self.range_constraints = program.range_constraints
        self.sources = frozenset(_source_keys(self.graph_module))
        weakref.finalize(self, forget_sources, self.sources)

    def __call__(self, state: list[torch.Tensor], args: Any, kwargs: Any) -> Any:
        from torch._export.utils import _check_input_constraints_for_graph
        from torch.export._unlift import _check_inputs_match

        with_paths = _check_inputs_match(args, kwargs, self.in_spec)
        _check_input_constraints_for_graph(self.user_inputs, with_paths, self.range_constraints)
        flat = self.graph_module(*state, *(value for _, value in with_paths))
        return pytree.tree_unflatten(list(flat), self.out_spec)


class SharedGraphModule(nn.Module):
    """A loaded program: its own tensors, run through a shared :class:`GraphTemplate`."""

    def __init__(self, template: GraphTemplate, state: list[tuple[str, InputKind, Any]]) -> None:
        super().__init__()
        self._template = template
        for name, kind, tensor in state:
            if kind == InputKind.PARAMETER:
                self.register_parameter(name, nn.Parameter(tensor, requires_grad=False))
            elif kind == InputKind.BUFFER:
                self.register_buffer(name, tensor)
            else:  # lifted constants are plain attributes, as in the unlifted module
                setattr(self, name, tensor)
        self._state_names = tuple(name for name, _, _ in state)

    @property
    def template(self) -> GraphTemplate:
        return self._template

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # getattr, not the tables: storage_precision widens narrow weights on this read.
        state = [getattr(self, name) for name in self._state_names]
        return self._template(state, args, kwargs)


def shared_graph_module(
    program: ExportedProgram, dtype: torch.dtype, sources: frozenset[str]
) -> SharedGraphModule | None:
    """``program`` as a :class:`SharedGraphModule` computing at ``dtype`` (its floating
    tensors cast as ``.module().to(dtype)`` and its constants would be), on the template
    of its graph; the generated ``sources`` of its load are forgotten but the template's.
    None where the program cannot be served so (see the module docstring)."""
    key = _template_key(program)
    if key is None:
        return None
    state = [
        (spec.arg.name, spec.kind, _cast(_state_tensor(program, spec), dtype))
        for spec in program.graph_signature.input_specs
        if spec.kind != InputKind.USER_INPUT
    ]
    with _TEMPLATES_LOCK:
        template = _TEMPLATES.get(key)
        if template is None:
            template = _TEMPLATES[key] = GraphTemplate(key, program)
    try:
        return SharedGraphModule(template, state)
    finally:
        forget_sources(sources - template.sources)


def live_templates() -> int:
    """How many templates models hold now (tests, diagnostics)."""
    with _TEMPLATES_LOCK:
        return len(_TEMPLATES)


@dataclass(frozen=True, slots=True)
class DimSizes:
    """The sizes one dimension of a program input takes, as torch checks them at run time:
    one size (static), or a range (a ``torch.export.Dim``; ``math.inf``: unbounded)."""

    lowest: int
    highest: float

    @property
    def static(self) -> bool:
        return self.lowest == self.highest

    def takes(self, low: int, high: int) -> bool:
        return self.lowest <= low and high <= self.highest

    def __str__(self) -> str:
        if self.static:
            return f"static at {self.lowest}"
        if math.isinf(self.highest):
            return f"at least {self.lowest}"
        if self.lowest == 0:
            return f"at most {int(self.highest)}"
        return f"{self.lowest}..{int(self.highest)}"


def input_sizes(program: ExportedProgram) -> list[tuple[str, tuple[DimSizes, ...]]]:
    """Per user input of ``program``, in order: its name and the sizes of each dimension.

    Read from the exported shapes (an int: static) and range constraints, as torch's
    input check does: a lower bound of 2 or less is not enforced (torch lets dims of 0/1
    through), and a dimension derived from another (``2 * s0``) is taken as any size."""
    placeholders = program.graph_module.graph.find_nodes(op="placeholder")
    inputs = []
    for node, spec in zip(placeholders, program.graph_signature.input_specs, strict=True):
        if spec.kind != InputKind.USER_INPUT:
            continue
        value = node.meta.get("val")
        shape = getattr(value, "shape", ())
        inputs.append((node.name, tuple(_dim_sizes(program, d) for d in shape)))
    return inputs


def _dim_sizes(program: ExportedProgram, dim: int | torch.SymInt) -> DimSizes:
    from torch._export.passes.add_runtime_assertions_for_constraints_pass import (
        _convert_range_to_int,
    )

    if not isinstance(dim, torch.SymInt):
        return DimSizes(int(dim), int(dim))
    bounds = program.range_constraints.get(dim.node.expr)
    if bounds is None:
        return DimSizes(0, math.inf)
    lowest, highest = _convert_range_to_int(bounds)  # what torch's check compares with
    return DimSizes(lowest if lowest > 2 else 0, highest)


def shape_problems(program: ExportedProgram, config: ModelConfig) -> list[str]:
    """Why requests ``config`` admits would fail torch's input check of ``program``: a
    batch dimension that does not take every batch size the model runs at (1 ..
    ``max_batch_size``, or its batch buckets), a dimension that model.yaml declares
    otherwise, or other inputs. Found at load, not as a 500 when two requests first meet in
    a batch."""
    inputs = input_sizes(program)
    if len(inputs) != len(config.inputs):
        return [
            f"{config.name}: the exported program takes {len(inputs)} inputs, model.yaml "
            f"declares {len(config.inputs)} ({', '.join(s.name for s in config.inputs)})"
        ]
    problems = []
    for spec, (arg, sizes) in zip(config.inputs, inputs, strict=True):
        where = f"{config.name}: input {spec.name!r} (the program's {arg!r})"
        declared = (None, *spec.dims) if config.batching else spec.dims  # None: the batch dim
        if len(sizes) != len(declared):
            problems.append(
                f"{where} has {len(sizes)} dimensions in the exported program, model.yaml "
                f"declares {len(declared)}"
            )
            continue
        for index, (want, got) in enumerate(zip(declared, sizes, strict=True)):
            problem = _batch_problem(config, got) if want is None else _dim_problem(want, got)
            if problem:
                problems.append(f"{where}: dim {index} {problem}")
    return problems


def _batch_problem(config: ModelConfig, got: DimSizes) -> str | None:
    """The batch dim takes every batch size the model runs at, or what to change."""
    buckets = config.compile.batch_buckets
    rows = buckets or (1, config.max_batch_size)
    if got.takes(min(rows), max(rows)):
        return None
    runs_at = f"batch buckets {list(buckets)}" if buckets else f"max_batch_size {max(rows)}"
    if got.static and got.lowest > 1:
        fix = f"declare compile.batch_buckets: [{got.lowest}] (batches padded to it), or "
    elif got.lowest <= 1:
        fix = f"set max_batch_size: {int(got.highest)}, or "
    else:
        fix = ""
    return (
        f"(the batch dimension) is {got} in the exported program, but model.yaml runs it "
        f"at up to {max(rows)} rows ({runs_at}): {fix}re-export it with dynamic_shapes "
        f"(torch.export.Dim('batch', min=1, max={max(rows)}))"
    )


def _dim_problem(want: int, got: DimSizes) -> str | None:
    """A dimension model.yaml declares ``want`` (-1: variable) takes what it admits."""
    if want == -1 and got.static:
        return (
            f"is {got} in the exported program, but model.yaml declares it variable (-1): "
            f"declare {got.lowest}, or re-export it with a dynamic dimension"
        )
    if want > 0 and not got.takes(want, want):
        return f"is {got} in the exported program, but model.yaml declares {want}"
    return None


def _template_key(program: ExportedProgram) -> str | None:
    """A hash of everything that shapes what the lifted graph computes from its inputs,
    and of nothing it is given (weights); None for a program that cannot be shared."""
    signature = program.graph_signature
    graph_module = program.graph_module
    if (
        program.call_spec.in_spec is None
        or program.call_spec.out_spec is None
        or any(
            spec.kind not in (*_STATE_KINDS, InputKind.USER_INPUT) for spec in signature.input_specs
        )
        or any(spec.kind != OutputKind.USER_OUTPUT for spec in signature.output_specs)
        or any(True for _ in graph_module.parameters())
        or any(True for _ in graph_module.buffers())
        or any(
            isinstance(value, torch.Tensor)
            for sub in graph_module.modules()
            for value in vars(sub).values()
        )
    ):
        return None
    digest = hashlib.blake2b(digest_size=16)
    parts: list[object] = [
        [(name, sub.code) for name, sub in graph_module.named_modules() if _is_graph(sub)],
        [(s.kind.name, s.arg.name, s.target, s.persistent) for s in signature.input_specs],
        [(s.kind.name, s.arg.name) for s in signature.output_specs],
        program.call_spec.in_spec,
        program.call_spec.out_spec,
        sorted((str(k), str(v)) for k, v in program.range_constraints.items()),
        [
            (node.name, str(node.meta.get("val")))
            for node in graph_module.graph.find_nodes(op="placeholder")
        ],
    ]
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _state_tensor(program: ExportedProgram, spec: Any) -> torch.Tensor:
    """The tensor a lifted input takes, found as ``ExportedProgram`` itself finds it
    (a non-persistent buffer is among the constants, not the state dict)."""
    stateful = spec.kind in (InputKind.PARAMETER, InputKind.BUFFER)
    if stateful and spec.persistent is not False and spec.target in program.state_dict:
        value = program.state_dict[spec.target].detach()
    else:
        value = program.constants[spec.target]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"lifted input {spec.target} is not a tensor")
    return value


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.float32 or not tensor.is_floating_point():
        return tensor
    return tensor.to(dtype)


def _is_graph(module: nn.Module) -> bool:
    return isinstance(module, torch.fx.GraphModule)


def _source_keys(graph_module: nn.Module) -> Iterable[str]:
    """The linecache keys of the generated code of ``graph_module`` and its subgraphs."""
    for sub in graph_module.modules():
        code = getattr(type(sub).forward, "__code__", None)
        if _is_graph(sub) and code is not None:
            yield code.co_filename
