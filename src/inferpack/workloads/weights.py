"""Seeded weights for workloads, stored as safetensors (never pickle)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from inferpack.workloads import WorkloadSpec
from inferpack.workloads.safetensors_io import read_safetensors


def build_seeded(spec: WorkloadSpec, options: Mapping[str, Any]) -> torch.nn.Module:
    """The workload with default-initialised weights drawn from ``options['seed']``."""
    seed = int(options.get("seed", 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = spec.build(options)
    return module.eval()


def save_weights(module: torch.nn.Module, path: Path) -> None:
    tensors = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(tensors, str(path))


def load_weights(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    module.load_state_dict(read_safetensors(path), strict=True)
    return module.eval()
