"""medium-cnn: the many-models memory benchmark's model (483k parameters, 1.85 MiB)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from inferpack.workloads import example_inputs, get_workload  # noqa: E402
from inferpack.workloads.weights import build_seeded  # noqa: E402


def test_medium_cnn_has_483k_parameters_and_100_logits() -> None:
    spec = get_workload("medium-cnn")
    module = build_seeded(spec, {"seed": 7})
    assert sum(p.numel() for p in module.parameters()) == 482_596
    state_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    assert state_bytes / 2**20 == pytest.approx(1.85, abs=0.01)
    inputs = example_inputs(spec.inputs, batch_size=2)
    with torch.inference_mode():
        out = module(torch.from_numpy(inputs["input"]))
    assert tuple(out.shape) == (2, 100)


def test_small_cnn_keeps_its_layout() -> None:
    """small-cnn shares medium-cnn's builder: same layers, same state_dict keys as before."""
    module = build_seeded(get_workload("small-cnn"), {"seed": 0})
    assert sum(p.numel() for p in module.parameters()) == 24_458
    assert [type(m).__name__ for m in module][:4] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert {"0.weight", "9.running_var", "14.weight"} <= set(module.state_dict())
