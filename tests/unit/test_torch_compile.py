"""Compiled torch models in the backend: AOTInductor packages, torch.compile per bucket,
CUDA graphs refused off CUDA, channels-last (``backends/torch_compile.py``)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from inferpack.backends import load_backends
from inferpack.backends.tensor_store import TensorStore
from inferpack.backends.torch_backend import TorchBackend
from inferpack.config.compile_config import CompileConfig
from inferpack.config.model_config import InstanceConfig, ModelConfig, TensorSpec
from inferpack.errors import ConfigError
from inferpack.repository import ModelSource
from inferpack.workloads import get_workload
from inferpack.workloads.weights import build_seeded, save_weights

SEED = 0
MLP_IN, MLP_OUT = 16, 4


def _mlp() -> nn.Module:
    return build_seeded(get_workload("tiny-mlp"), {"seed": SEED}).eval()


def _config(platform: str, **changes: Any) -> ModelConfig:
    fields: dict[str, Any] = {
        "inputs": (TensorSpec("input", "FP32", (MLP_IN,)),),
        "outputs": (TensorSpec("output", "FP32", (MLP_OUT,)),),
        "max_batch_size": 8,
        "instances": InstanceConfig(1, "cpu"),
        **changes,
    }
    return ModelConfig("m", platform, **fields)


@pytest.fixture(scope="module")
def aoti_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-mlp exported with a dynamic batch (1..8) and compiled by AOTInductor (~10 s)."""
    path = tmp_path_factory.mktemp("aoti") / "model.pt2"
    batch = Dim("batch", min=1, max=8)
    program = torch.export.export(_mlp(), (torch.zeros(2, MLP_IN),), dynamic_shapes=({0: batch},))
    with warnings.catch_warnings():  # torch's own deprecated pytree use while packaging
        warnings.simplefilter("ignore", FutureWarning)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return path


def _workload_source(tmp_path: Path, workload: str, config: ModelConfig) -> ModelSource:
    path = tmp_path / "model.safetensors"
    save_weights(build_seeded(get_workload(workload), {"seed": SEED}), path)
    return ModelSource(config, "1", path)


def _run(backend: Any, x: np.ndarray) -> np.ndarray:
    out: np.ndarray = backend.run({"input": x})[backend.config.outputs[0].name]
    return out


def test_aoti_package_runs_as_eager_and_counts_its_constants(aoti_package: Path) -> None:
    (backend,) = load_backends(ModelSource(_config("torch_aoti"), "1", aoti_package))
    x = np.random.default_rng(0).standard_normal((3, MLP_IN)).astype(np.float32)
    with torch.no_grad():
        expected = _mlp()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(backend, x), expected, atol=1e-5, rtol=1e-5)
    eager_bytes = sum(p.numel() * p.element_size() for p in _mlp().parameters())
    # Inductor may fold a tiny constant into the code (the last 16-byte bias): the package
    # declares 2,688 of the 2,704 bytes.
    assert eager_bytes - 16 <= backend.memory_bytes <= eager_bytes


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"instances": InstanceConfig(1, "cuda:0")}, ["cuda:0", "compiled for cpu"]),
        ({"precision": "bf16"}, ["precision bf16", "fp32 weights"]),
        ({"storage_precision": "bf16"}, ["storage_precision", "torch_aoti"]),
    ],
)
def test_aoti_package_refuses_what_it_was_not_compiled_for(
    aoti_package: Path, changes: dict[str, Any], named: list[str]
) -> None:
    source = ModelSource(_config("torch_aoti", **changes), "1", aoti_package)
    with pytest.raises(ConfigError) as error:
        load_backends(source)
    for words in named:
        assert words in str(error.value)


def test_inductor_compiles_every_bucket_at_warm_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Other tests in this process may have compiled the same forward at the same shapes:
    # dynamo would reuse those frames, and the counts below would not move.
    torch._dynamo.reset()
    compiled = CompileConfig("inductor", (1, 4))
    source = _workload_source(
        tmp_path, "tiny-mlp", _config("workload", workload="tiny-mlp", compile=compiled)
    )
    (backend,) = TorchBackend.load_instances(source, TensorStore())
    compiles = torch._dynamo.utils.counters["frames"]["ok"]
    with caplog.at_level(logging.INFO, logger="inferpack.backends.torch_compile"):
        backend.warm_up({"input": np.zeros((1, MLP_IN), np.float32)})
    warmed = [r.getMessage() for r in caplog.records if "warmed in" in r.getMessage()]
    assert [m.split(": ")[-1].split(" warmed")[0] for m in warmed] == ["batch 4", "batch 1"]
    assert torch._dynamo.utils.counters["frames"]["ok"] >= compiles + 2  # one per bucket
    frames = dict(torch._dynamo.utils.counters["frames"])
    rng = np.random.default_rng(1)
    for rows in (1, 4, 3):  # 3 is no bucket: run eagerly, never compiled while serving
        x = rng.standard_normal((rows, MLP_IN)).astype(np.float32)
        with torch.no_grad():
            expected = _mlp()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_run(backend, x), expected, atol=1e-5, rtol=1e-5)
    assert dict(torch._dynamo.utils.counters["frames"]) == frames


def test_cudagraphs_on_cpu_is_refused_naming_the_device(tmp_path: Path) -> None:
    compiled = CompileConfig("cudagraphs", (1, 4))
    config = _config("workload", workload="tiny-mlp", compile=compiled)
    with pytest.raises(ConfigError, match=r"cudagraphs needs a CUDA device.* runs on cpu"):
        TorchBackend.load_instances(_workload_source(tmp_path, "tiny-mlp", config), TensorStore())


def test_channels_last_matches_eager(tmp_path: Path) -> None:
    config = _config(
        "workload",
        workload="small-cnn",
        inputs=(TensorSpec("input", "FP32", (3, 32, 32)),),
        outputs=(TensorSpec("logits", "FP32", (10,)),),
        compile=CompileConfig(channels_last=True),
    )
    (backend,) = TorchBackend.load_instances(
        _workload_source(tmp_path, "small-cnn", config), TensorStore()
    )
    conv = next(m for m in backend.module.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    eager = build_seeded(get_workload("small-cnn"), {"seed": SEED}).eval()
    with torch.no_grad():
        expected = eager(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(backend, x), expected, atol=1e-5, rtol=1e-5)


def test_channels_last_needs_a_4d_input(tmp_path: Path) -> None:
    config = _config("workload", workload="tiny-mlp", compile=CompileConfig(channels_last=True))
    with pytest.raises(ConfigError, match="needs a 4-D input"):
        TorchBackend.load_instances(_workload_source(tmp_path, "tiny-mlp", config), TensorStore())
