"""Repositories of models that share weights: one backbone, a head of their own each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

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
