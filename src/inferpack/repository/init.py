"""``inferpack repo init``: write a ready repository of reference workloads."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import yaml

from inferpack.config.model_config import ModelConfig, model_config_to_dict
from inferpack.errors import ConfigError, MissingExtraError
from inferpack.repository.local import CONFIG_FILE
from inferpack.repository.python_examples import PYTHON_EXAMPLES, write_python_example
from inferpack.workloads import WorkloadSpec, get_workload

log = logging.getLogger(__name__)
DEFAULT_WORKLOADS = ("tiny-mlp", "small-cnn", "squeezenet", "resnet50")


def init_repository(root: Path, workloads: Sequence[str], seed: int = 0) -> list[Path]:
    """Write model.yaml, the weights (version 1, safetensors: seeded, or published for a
    pretrained workload) and the files its processing reads for each workload; a python
    example (PYTHON_EXAMPLES) is its model.py and model.yaml (no torch needed)."""
    written = []
    for name in workloads:
        if name in PYTHON_EXAMPLES:
            written.append(write_python_example(root, name, seed))
            continue
        from inferpack.workloads.weights import build_seeded, save_weights

        spec = _workload(name)
        config = spec.default_config(seed=seed)
        folder = root / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        options = {**config.workload_options, "pretrained": True} if spec.pretrained else None
        module = build_seeded(spec, options or config.workload_options)
        save_weights(module, folder / "1" / config.artifact)
        config = _write_files(spec, config, folder)
        (folder / CONFIG_FILE).write_text(
            yaml.safe_dump(model_config_to_dict(config), sort_keys=False)
        )
        written.append(folder)
    return written


def _workload(name: str) -> WorkloadSpec:
    try:
        return get_workload(name)
    except ConfigError as error:
        raise ConfigError(
            [f"{error.message}; python examples: {', '.join(PYTHON_EXAMPLES)}"]
        ) from None


def _write_files(spec: WorkloadSpec, config: ModelConfig, folder: Path) -> ModelConfig:
    """Labels and tokenizers beside model.yaml. Without the image extra a classifier is
    written without its labels file (answers name class indices), not refused."""
    try:
        spec.write_files(folder)
    except MissingExtraError as error:
        classification = config.postprocess.classification
        if spec.pretrained or classification is None:
            raise
        log.warning("%s: written without class labels: %s", spec.name, error)
        unlabelled = dataclasses.replace(classification, labels=None)
        post = dataclasses.replace(config.postprocess, classification=unlabelled)
        return dataclasses.replace(config, postprocess=post)
    return config
