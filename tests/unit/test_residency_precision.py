"""storage_precision: weights resident in bf16/fp16, computed in fp32.

Checked through model.yaml parsing, the torch backend's load (``TorchBackend``: memory it
reports, outputs) and ``inferpack bench``'s accuracy against the fp32-stored reference.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from inferpack.backends.storage_precision import keep_narrow
from inferpack.backends.torch_backend import TorchBackend, module_tensors, storage_bytes
from inferpack.bench.accuracy import compare
from inferpack.bench.runner import run_bench
from inferpack.bench.spec import BenchSpec
from inferpack.config import parse_model_config
from inferpack.config.model_config import InstanceConfig, model_config_to_dict
from inferpack.errors import ConfigError
from inferpack.repository import LocalRepository, ModelSource
from inferpack.repository.init import init_repository
from inferpack.types import Tensor
from inferpack.workloads import example_inputs, get_workload
from inferpack.workloads.weights import build_seeded

# bf16 keeps 8 bits of mantissa (fp16: 11): relative errors of a few 1e-3 on logits.
MAX_RELATIVE_L2 = 1e-2

RAW: dict[str, Any] = {
    "name": "m",
    "platform": "workload",
    "workload": "small-cnn",
    "max_batch_size": 8,
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 64, 64]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [10]}],
}


def test_storage_precision_parses_and_is_written_back() -> None:
    config = parse_model_config({**RAW, "storage_precision": "bf16"}, "m/model.yaml")
    assert config.storage_precision == "bf16" and config.precision == "fp32"
    assert model_config_to_dict(config)["storage_precision"] == "bf16"
    assert parse_model_config(RAW, "m/model.yaml").storage_precision is None
    assert "storage_precision" not in model_config_to_dict(parse_model_config(RAW, "m"))


def test_storage_precision_problems_are_reported_with_the_others() -> None:
    raw = {**RAW, "storage_precision": "int8", "precision": "fp64", "warmup": "yes"}
    with pytest.raises(ConfigError) as raised:
        parse_model_config(raw, "m/model.yaml")
    fields = sorted(p.split(": ")[1] for p in raised.value.problems)
    assert fields == ["precision", "storage_precision", "warmup"]
    raw = {**RAW, "platform": "torchscript", "storage_precision": "fp16", "precision": "bf16"}
    with pytest.raises(ConfigError) as raised:
        parse_model_config(raw, "m/model.yaml")
    problems = raised.value.problems
    assert len(problems) == 2
    assert "needs precision fp32" in problems[0] and "not available for torchscript" in problems[1]


def _workload_source(tmp_path: Path, storage: str | None, count: int = 1) -> ModelSource:
    if not (tmp_path / "small-cnn").exists():
        init_repository(tmp_path, ["small-cnn"], seed=5)
    source = LocalRepository(tmp_path).sources("small-cnn")[-1]
    config = dataclasses.replace(
        source.config, storage_precision=storage, instances=InstanceConfig(count, "cpu")
    )
    return dataclasses.replace(source, config=config)


def _export_source(tmp_path: Path, storage: str | None) -> ModelSource:
    path = tmp_path / "model.pt2"
    if not path.exists():
        module = build_seeded(get_workload("small-cnn"), {"seed": 5})
        batch = Dim("batch", min=1, max=32)
        example = (torch.zeros(2, 3, 64, 64),)
        program = torch.export.export(module, example, dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    raw = {**RAW, "platform": "torch_export", "storage_precision": storage}
    del raw["workload"]
    config = parse_model_config(raw, "m/model.yaml")
    config = dataclasses.replace(config, instances=InstanceConfig(1, "cpu"))
    return ModelSource(config, "1", path)


def _loaded(source: ModelSource) -> TorchBackend:
    (backend, *_) = TorchBackend.load_instances(source)
    backend.warm_up(example_inputs(source.config.inputs, 1))
    return backend


@pytest.mark.parametrize("storage", ["bf16", "fp16"])
@pytest.mark.parametrize("platform", ["workload", "torch_export"])
def test_narrow_storage_halves_memory_and_stays_close_to_fp32(
    tmp_path: Path, platform: str, storage: str
) -> None:
    make = _workload_source if platform == "workload" else _export_source
    full, narrow = _loaded(make(tmp_path, None)), _loaded(make(tmp_path, storage))
    inputs = example_inputs(full.config.inputs, 8, seed=1)

    accuracy = compare(full.run(inputs), narrow.run(inputs))

    # BatchNorm's int64 batch counters stay as they are: a few bytes above half.
    assert narrow.memory_bytes == pytest.approx(full.memory_bytes / 2, rel=1e-3)
    relative_l2 = accuracy["relative_l2"]
    assert isinstance(relative_l2, float) and 0 < relative_l2 < MAX_RELATIVE_L2
    assert accuracy["top1_agreement"] == 1.0


def test_no_full_precision_weights_stay_resident_after_batches(tmp_path: Path) -> None:
    backend = _loaded(_workload_source(tmp_path, "bf16"))
    reported = backend.memory_bytes
    for _ in range(3):
        backend.run(example_inputs(backend.config.inputs, 4))
    floating = [t for t in module_tensors(backend.module) if t.is_floating_point()]
    assert floating and {t.dtype for t in floating} == {torch.bfloat16}
    assert backend.memory_bytes == reported


def test_instances_sharing_a_narrow_module_run_concurrently(tmp_path: Path) -> None:
    """Widening happens on read, never by swapping the shared module's weights."""
    first, second = TorchBackend.load_instances(_workload_source(tmp_path, "bf16", count=2))
    assert first.module is second.module
    inputs = example_inputs(first.config.inputs, 2)
    expected = first.run(inputs)["logits"]
    seen: list[Tensor] = []

    def work(backend: TorchBackend) -> None:
        seen.extend(backend.run(inputs)["logits"] for _ in range(10))

    threads = [threading.Thread(target=work, args=(b,)) for b in (first, second) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 40
    for logits in seen:
        np.testing.assert_array_equal(logits, expected)


class _Scaled(nn.Module):
    """A parameter on the root module besides a child's: export keeps it on the root."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 32))
        self.linear = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x * self.scale)
        return out


@pytest.mark.parametrize("kind", ["eager", "exported"])
def test_tied_and_root_weights_are_kept_once_and_narrow(kind: str) -> None:
    model = _Scaled().eval()
    model.tied = model.linear  # the same weights reachable twice
    x = torch.randn(4, 32)
    with torch.inference_mode():
        expected = model(x)
    module = model if kind == "eager" else torch.export.export(model, (x,)).module()
    full_bytes = storage_bytes(module_tensors(module))

    keep_narrow(module, torch.bfloat16, torch.float32)

    assert storage_bytes(module_tensors(module)) == full_bytes // 2
    with torch.inference_mode():
        out = module(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)
    assert not torch.equal(out, expected)  # bf16 weights do change the result a little


def test_bench_reports_accuracy_against_fp32_stored_weights(tmp_path: Path) -> None:
    init_repository(tmp_path, ["small-cnn"], seed=5)
    path = tmp_path / "small-cnn" / "model.yaml"
    path.write_text(path.read_text() + "storage_precision: bf16\n")
    spec = BenchSpec(
        model="small-cnn",
        source="repository",
        repository=str(tmp_path),
        device="cpu",
        batch_sizes=(2,),
        duration_s=0.2,
        warmup_s=0.05,
        repeats=2,
    )

    document = run_bench(spec)

    assert document["spec"]["storage_precision"] == "bf16"
    (result,) = document["results"]
    assert result["precision"] == "fp32"
    assert 0 < result["accuracy"]["relative_l2"] < MAX_RELATIVE_L2
