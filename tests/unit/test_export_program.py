"""torch.export programs served on a shared graph (``backends/export_program.py``).

The shared path must answer exactly as ``ExportedProgram.module()`` does, share one graph
between programs of one architecture whatever their weights, free it with the last model
using it, leave nothing of a load behind, and run models sharing a graph from many threads.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.export import Dim
from torch.fx.graph_module import _loader

from inferpack.backends.export_program import (
    SharedGraphModule,
    forget_sources,
    live_templates,
    load_program,
    shape_problems,
    shared_graph_module,
)
from inferpack.backends.storage_precision import keep_narrow
from inferpack.backends.tensor_store import TensorStore
from inferpack.backends.torch_backend import TorchBackend, module_tensors, storage_bytes
from inferpack.config import parse_model_config
from inferpack.config.model_config import InstanceConfig, model_config_to_dict
from inferpack.repository import ModelSource
from inferpack.workloads import example_inputs, get_workload
from inferpack.workloads.weights import build_seeded

Writer = Callable[[int], Path]


def _writer(tmp_path: Path, model: str) -> tuple[Writer, tuple[torch.Tensor, ...]]:
    """Writes ``model`` exported once (dynamic batch) with the weights of a seed."""
    spec = get_workload(model)
    example = tuple(torch.from_numpy(a) for a in example_inputs(spec.inputs, 2).values())
    dims = tuple({0: Dim("batch", min=1, max=spec.max_batch_size)} for _ in example)
    program = torch.export.export(build_seeded(spec, {}), example, dynamic_shapes=dims)

    def write(seed: int) -> Path:
        path = tmp_path / f"{model}-{seed}.pt2"
        with torch.no_grad():
            weights = build_seeded(spec, {"seed": seed}).state_dict()
            for name, value in weights.items():
                program.state_dict[name].copy_(value)
        torch.export.save(program, str(path))
        return path

    batch = tuple(
        torch.randn(5, *x.shape[1:], generator=torch.Generator().manual_seed(1)) for x in example
    )
    return write, batch


def _shared(path: Path, dtype: torch.dtype = torch.float32) -> SharedGraphModule:
    program, sources = load_program(path, "cpu")
    module = shared_graph_module(program, dtype, sources)
    assert module is not None
    return module


@pytest.mark.parametrize("model", ["tiny-mlp", "small-cnn", "medium-cnn"])
def test_answers_as_the_unlifted_module(tmp_path: Path, model: str) -> None:
    write, batch = _writer(tmp_path, model)
    path = write(3)
    expected = torch.export.load(str(path)).module()(*batch)
    with torch.inference_mode():
        got = _shared(path)(*batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_cast_to_bf16_as_the_unlifted_module(tmp_path: Path) -> None:
    write, batch = _writer(tmp_path, "small-cnn")
    path = write(2)
    unlifted = torch.export.load(str(path)).module().to(torch.bfloat16)
    inputs = tuple(x.to(torch.bfloat16) for x in batch)
    shared = _shared(path, torch.bfloat16)
    assert {t.dtype for t in shared.parameters()} == {torch.bfloat16}
    torch.testing.assert_close(shared(*inputs), unlifted(*inputs), rtol=0, atol=0)


def test_one_template_per_graph_freed_with_its_last_model(tmp_path: Path) -> None:
    write, batch = _writer(tmp_path, "small-cnn")
    gc.collect()
    before = live_templates()
    first, second = _shared(write(1)), _shared(write(2))
    assert first.template is second.template
    assert live_templates() == before + 1
    template = weakref.ref(first.template)
    sources = first.template.sources
    assert sources and sources <= set(_loader.eval_cache)
    first_out, second_out = first(*batch), second(*batch)
    assert not torch.equal(first_out, second_out)  # each runs its own weights
    torch.testing.assert_close(first_out, torch.export.load(str(write(1))).module()(*batch))

    del first
    gc.collect()
    assert template() is not None
    del second
    gc.collect()
    assert template() is None
    assert live_templates() == before
    assert not sources & set(_loader.eval_cache)


def test_loads_leave_no_generated_source_behind(tmp_path: Path) -> None:
    write, batch = _writer(tmp_path, "tiny-mlp")
    paths = [write(seed) for seed in range(3)]
    _shared(paths[0])(*batch)  # one-time costs
    gc.collect()
    cached = len(_loader.eval_cache)
    for _ in range(3):
        models = [_shared(path) for path in paths]
        assert len(_loader.eval_cache) == cached + 1  # the one template's code
        for model in models:
            model(*batch)
        del models, model
        gc.collect()
        assert len(_loader.eval_cache) == cached


def test_inputs_checked_as_exported(tmp_path: Path) -> None:
    write, _ = _writer(tmp_path, "tiny-mlp")
    model = _shared(write(0))
    too_many = torch.randn(get_workload("tiny-mlp").max_batch_size + 1, 16)
    with pytest.raises(RuntimeError):
        model(too_many)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 17))


def test_threads_running_models_on_one_template(tmp_path: Path) -> None:
    write, batch = _writer(tmp_path, "small-cnn")
    models = [_shared(write(seed)) for seed in range(6)]
    assert len({id(model.template) for model in models}) == 1
    rows = [batch[0][i : i + 1] for i in range(batch[0].shape[0])]
    with torch.inference_mode():
        expected = [[model(row) for row in rows] for model in models]
    failures: list[str] = []

    def serve(worker: int) -> None:
        with torch.inference_mode():
            for step in range(40):
                index = (worker + step) % len(models)
                row = (worker * 7 + step) % len(rows)
                if not torch.equal(models[index](rows[row]), expected[index][row]):
                    failures.append(f"worker {worker} model {index} row {row}")

    threads = [threading.Thread(target=serve, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


class _Counting(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return self.linear(x) + self.calls


def test_buffer_mutations_as_the_unlifted_module(tmp_path: Path) -> None:
    """Training-dialect programs mutate buffers in place in the graph: the model's own
    buffer, as in the unlifted module. Functionalised ones return the new value for the
    caller to write back (BUFFER_MUTATION): those are not shared (None: unlifted)."""
    program = torch.export.export(_Counting().eval(), (torch.randn(2, 4),))
    in_place, functional = tmp_path / "in_place.pt2", tmp_path / "functional.pt2"
    torch.export.save(program, str(in_place))
    with warnings.catch_warnings():  # torch's own use of a deprecated pytree check
        warnings.simplefilter("ignore", FutureWarning)
        torch.export.save(program.run_decompositions(), str(functional))
    x = torch.randn(2, 4)
    shared, unlifted = _shared(in_place), torch.export.load(str(in_place)).module()
    for _ in range(2):
        torch.testing.assert_close(shared(x), unlifted(x), rtol=0, atol=0)
    assert shared.get_buffer("b_calls").item() == 2
    loaded, sources = load_program(functional, "cpu")
    assert shared_graph_module(loaded, torch.float32, sources) is None


@pytest.mark.parametrize("storage", [None, "bf16"])
def test_served_by_the_backend_on_the_shared_graph(tmp_path: Path, storage: str | None) -> None:
    """Through TorchBackend (weight store, storage precision): the shared module, its
    tensors counted as before, answers as the unlifted module does with narrow weights."""
    write, batch = _writer(tmp_path, "small-cnn")
    path = write(4)
    raw = model_config_to_dict(get_workload("small-cnn").default_config("m", seed=4))
    raw.update(platform="torch_export", storage_precision=storage)
    del raw["workload"], raw["workload_options"]
    config = dataclasses.replace(
        parse_model_config(raw, str(path)), instances=InstanceConfig(1, "cpu")
    )
    (backend,) = TorchBackend.load_instances(ModelSource(config, "1", path), TensorStore())
    assert isinstance(backend.module, SharedGraphModule)
    unlifted = torch.export.load(str(path)).module()
    if storage is not None:
        keep_narrow(unlifted, torch.bfloat16, torch.float32)
    expected = storage_bytes(module_tensors(unlifted))
    assert backend.weight_bytes == expected
    with torch.inference_mode():
        torch.testing.assert_close(backend.module(*batch), unlifted(*batch), rtol=0, atol=0)
    backend.close()


def _shape_problems(tmp_path: Path, example: torch.Tensor, dims: Any, **config: Any) -> list[str]:
    """Problems of ``nn.Linear(16, 4)`` exported from ``example`` with ``dims``, served
    with model.yaml fields ``config`` (one input ``x`` of shape [16] by default)."""
    path = tmp_path / "m.pt2"
    program = torch.export.export(nn.Linear(16, 4).eval(), (example,), dynamic_shapes=dims)
    torch.export.save(program, str(path))
    raw: dict[str, Any] = {
        "name": "m",
        "platform": "torch_export",
        "max_batch_size": 32,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [16]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [4]}],
        **config,
    }
    loaded, sources = load_program(path, "cpu")
    forget_sources(sources)
    return shape_problems(loaded, parse_model_config(raw, str(path)))


def test_a_static_batch_dimension_is_refused_naming_it(tmp_path: Path) -> None:
    (problem,) = _shape_problems(tmp_path, torch.zeros(1, 16), None)
    assert problem.startswith("m: input 'x' (the program's 'input'): dim 0 (the batch dimension)")
    assert "is static at 1 in the exported program" in problem
    assert "up to 32 rows (max_batch_size 32): set max_batch_size: 1" in problem
    assert _shape_problems(tmp_path, torch.zeros(1, 16), None, max_batch_size=1) == []


def test_a_static_batch_of_several_rows_is_served_padded_to_it(tmp_path: Path) -> None:
    (problem,) = _shape_problems(tmp_path, torch.zeros(8, 16), None)
    assert "is static at 8" in problem and "compile.batch_buckets: [8]" in problem
    buckets = {"compile": {"batch_buckets": [8]}}
    assert _shape_problems(tmp_path, torch.zeros(8, 16), None, **buckets) == []


def test_a_batch_range_must_cover_max_batch_size(tmp_path: Path) -> None:
    dims = ({0: Dim("batch", min=1, max=8)},)
    (problem,) = _shape_problems(tmp_path, torch.zeros(2, 16), dims)
    assert "is at most 8 in the exported program" in problem
    assert "set max_batch_size: 8" in problem
    assert _shape_problems(tmp_path, torch.zeros(2, 16), dims, max_batch_size=8) == []
    unbounded = ({0: Dim("batch")},)  # torch lets a batch of 1 through a min of 2
    assert _shape_problems(tmp_path, torch.zeros(2, 16), unbounded, max_batch_size=64) == []


def test_other_dimensions_and_inputs_must_match_model_yaml(tmp_path: Path) -> None:
    example, dims = torch.zeros(2, 16), ({0: Dim("batch", min=1, max=32)},)
    variable = [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    (problem,) = _shape_problems(tmp_path, example, dims, inputs=variable)
    assert "dim 1 is static at 16 in the exported program, but model.yaml declares it" in problem
    other = [{"name": "x", "datatype": "FP32", "shape": [8]}]
    (problem,) = _shape_problems(tmp_path, example, dims, inputs=other)
    assert problem.endswith(
        "dim 1 is static at 16 in the exported program, but model.yaml declares 8"
    )
    rank = [{"name": "x", "datatype": "FP32", "shape": [4, 4]}]
    (problem,) = _shape_problems(tmp_path, example, dims, inputs=rank)
    assert "has 2 dimensions in the exported program, model.yaml declares 3" in problem
    two = [*other, {"name": "z", "datatype": "FP32", "shape": [16]}]
    (problem,) = _shape_problems(tmp_path, example, dims, inputs=two)
    assert "the exported program takes 1 inputs, model.yaml declares 2 (x, z)" in problem
