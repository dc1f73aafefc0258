"""``inferpack repo init``: write a ready repository of reference workloads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from inferpack.config.model_config import model_config_to_dict
from inferpack.repository.local import CONFIG_FILE
from inferpack.workloads import get_workload

DEFAULT_WORKLOADS = ("tiny-mlp", "small-cnn", "squeezenet", "resnet50")


def init_repository(root: Path, workloads: Sequence[str], seed: int = 0) -> list[Path]:
    """Write model.yaml and seeded safetensors weights (version 1) for each workload."""
    from inferpack.workloads.weights import build_seeded, save_weights

    written = []
    for name in workloads:
        spec = get_workload(name)
        config = spec.default_config(seed=seed)
        folder = root / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(
            yaml.safe_dump(model_config_to_dict(config), sort_keys=False)
        )
        options = {**config.workload_options, "pretrained": True} if spec.pretrained else None
        module = build_seeded(spec, options or config.workload_options)
        save_weights(module, folder / "1" / config.artifact)
        spec.write_files(folder)
        written.append(folder)
    return written
