"""Repositories of models that share weights: one backbone, a head of their own each (and
tenants, some of which write their own buffers)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from torch import nn

HEAD_PREFIX = "14."  # small-cnn's final Linear (a Sequential: 3 blocks of 4, pool, flatten)


def write_head_variants(root: Path, heads: Sequence[int], backbone_seed: int = 0) -> list[str]:
    """One small-cnn model per seed in ``heads``, named ``head-<seed>``: the convolution
    blocks drawn from ``backbone_seed`` (equal bytes in every model), the final layer from
    the model's own seed. Returns the model names."""
    from safetensors.torch import save_file

    from inferpack.config.model_config import model_config_to_dict
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import build_seeded

    spec = get_workload("small-cnn")
    backbone = build_seeded(spec, {"seed": backbone_seed}).state_dict()
    assert any(key.startswith(HEAD_PREFIX) for key in backbone), "small-cnn layout changed"
    names = []
    for seed in heads:
        own = build_seeded(spec, {"seed": seed}).state_dict()
        weights = {
            key: (own if key.startswith(HEAD_PREFIX) else backbone)[key].contiguous().clone()
            for key in backbone
        }
        name = f"head-{seed}"
        (root / name / "1").mkdir(parents=True)
        config = model_config_to_dict(spec.default_config(name, seed=seed))
        (root / name / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        save_file(weights, str(root / name / "1" / "model.safetensors"))
        names.append(name)
    return names


class Tenant(nn.Module):
    """A tenant's model: a backbone every tenant shares (seed 0), a head of its own, and a
    zero-initialised 1 KiB buffer (big enough for the weight store to share by content).

    A *writer* copies the first row of each batch into its buffer (state, as a cache or a
    counter keeps) and answers from its weights; a *reader* adds its buffer, which it never
    writes, to its answer: a write into the reader's buffer by anyone shows in its output."""

    def __init__(self, head_seed: int, writes: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(16, 16)
        torch.manual_seed(head_seed)
        self.head = nn.Linear(16, 4)
        self.register_buffer("seen", torch.zeros(256))
        self.writes = writes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.backbone(x)))
        if self.writes:
            self.seen[:16].copy_(x[0])
            return out
        return out + self.seen[:4]


def write_tenants(root: Path, readers: int, writers: int) -> dict[str, Tenant]:
    """torch.export programs of ``readers`` + ``writers`` :class:`Tenant` models (batch
    1..8), named ``reader-<i>`` and ``writer-<i>``, in ``root``; the modules by name."""
    from torch.export import Dim

    tenants = {f"reader-{i}": Tenant(i + 1, writes=False) for i in range(readers)}
    tenants |= {f"writer-{i}": Tenant(100 + i, writes=True) for i in range(writers)}
    for name, module in tenants.items():
        (root / name / "1").mkdir(parents=True)
        config = {
            "name": name,
            "platform": "torch_export",
            "max_batch_size": 8,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [16]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [4]}],
            "instances": {"count": 1, "device": "cpu"},
        }
        (root / name / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        batch = ({0: Dim("batch", min=1, max=8)},)
        program = torch.export.export(module.eval(), (torch.zeros(2, 16),), dynamic_shapes=batch)
        torch.export.save(program, str(root / name / "1" / "model.pt2"))
    return tenants
