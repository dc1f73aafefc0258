from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inferpack.workloads import WORKLOADS, example_inputs, get_workload  # noqa: E402
from inferpack.workloads.weights import build_seeded  # noqa: E402

# Batch-1 forward on this 2-core CPU; bert-base needs the text extra.
CPU_WORKLOADS = ["tiny-mlp", "small-cnn", "squeezenet", "resnet50", "vgg19", "openpose"]


@pytest.mark.parametrize("name", CPU_WORKLOADS)
def test_workload_output_shapes_match_its_spec(name: str) -> None:
    spec = get_workload(name)
    module = build_seeded(spec, {"seed": 0})
    inputs = example_inputs(spec.inputs, batch_size=1)
    with torch.inference_mode():
        out = module(*(torch.from_numpy(v) for v in inputs.values()))
    outs = out if isinstance(out, tuple) else (out,)
    assert [tuple(o.shape) for o in outs] == [(1, *s.dims) for s in spec.outputs]


def test_openpose_layout() -> None:
    module = build_seeded(get_workload("openpose"), {"seed": 0})
    base_convs = [m for m in module.base.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(base_convs) == 12 and base_convs[-1].out_channels == 128
    assert module.stage2.paf[0].in_channels == 185 and module.stage2.paf[0].kernel_size == (7, 7)
    assert module.stage1.heatmap[0].kernel_size == (3, 3)


def test_seed_makes_weights_deterministic() -> None:
    spec = get_workload("small-cnn")
    a, b, c = (build_seeded(spec, {"seed": s}).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_registry_is_torch_free_metadata() -> None:
    assert {"tiny-mlp", "resnet50", "openpose", "bert-base"} <= set(WORKLOADS)
    inputs = example_inputs(get_workload("bert-base").inputs, batch_size=2)
    assert inputs["input_ids"].shape == (2, 128) and inputs["attention_mask"].dtype == np.int64


def test_bert_base_builds_when_transformers_is_installed() -> None:
    pytest.importorskip("transformers")
    spec = get_workload("bert-base")
    module = build_seeded(spec, {"seed": 0})
    inputs = example_inputs(spec.inputs, batch_size=1)
    with torch.inference_mode():
        out = module(*(torch.from_numpy(v) for v in inputs.values()))
    assert tuple(out.shape) == (1, 2)
