"""What the torch backend counts as a model's memory (the LRU budget's unit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from inferpack.backends.torch_backend import TorchBackend, module_tensors, storage_bytes
from inferpack.config.model_config import InstanceConfig, ModelConfig, TensorSpec
from inferpack.repository import ModelSource
from inferpack.workloads import get_workload
from inferpack.workloads.weights import build_seeded


def _weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _torchscript_source(tmp_path: Path, module: torch.jit.ScriptModule) -> ModelSource:
    path = tmp_path / "model.pt"
    module.save(str(path))
    config = ModelConfig(
        "cnn",
        "torchscript",
        (TensorSpec("input", "FP32", (3, 64, 64)),),
        (TensorSpec("logits", "FP32", (10,)),),
        max_batch_size=4,
        artifact="model.pt",
        instances=InstanceConfig(1, "cpu"),
    )
    return ModelSource(config, "1", path)


def test_frozen_torchscript_counts_its_weights(tmp_path: Path) -> None:
    """A frozen module has no parameters: its weights are constants of its graph."""
    eager = build_seeded(get_workload("small-cnn"), {"seed": 0})
    frozen = torch.jit.freeze(torch.jit.script(eager))
    assert not list(frozen.parameters())
    (backend,) = TorchBackend.load_instances(_torchscript_source(tmp_path, frozen))
    backend.warm_up({"input": np.zeros((1, 3, 64, 64), np.float32)})
    # Freezing folds batch norms into convolutions, so a little less than the eager weights.
    assert backend.memory_bytes == pytest.approx(_weight_bytes(eager), rel=0.10)


def test_scripted_module_counts_parameters_and_tensor_attributes(tmp_path: Path) -> None:
    eager = build_seeded(get_workload("small-cnn"), {"seed": 0})
    (backend,) = TorchBackend.load_instances(_torchscript_source(tmp_path, torch.jit.script(eager)))
    assert backend.memory_bytes == _weight_bytes(eager)


def test_shared_storages_count_once_and_plain_tensor_attributes_count() -> None:
    layer = nn.Linear(64, 64)
    tied = nn.Sequential(layer, nn.ReLU(), layer)  # one weight used twice
    tied.view = layer.weight.detach()[:8]  # type: ignore[assignment]  # shares its storage
    assert storage_bytes(module_tensors(tied)) == _weight_bytes(layer)
    tied.table = torch.zeros(100)  # type: ignore[assignment]  # neither parameter nor buffer
    assert storage_bytes(module_tensors(tied)) == _weight_bytes(layer) + 400


def test_eager_workload_counts_exactly_its_parameters() -> None:
    module = build_seeded(get_workload("tiny-mlp"), {"seed": 0})
    assert storage_bytes(module_tensors(module)) == (16 * 32 + 32 + 32 * 4 + 4) * 4
