"""CUDA paths of compiled torch models: CUDA graphs per bucket and torch.compile per
bucket on a GPU (skipped without one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from inferpack.backends.tensor_store import TensorStore  # noqa: E402
from inferpack.backends.torch_backend import TorchBackend  # noqa: E402
from inferpack.config.compile_config import CompileConfig  # noqa: E402
from inferpack.config.model_config import InstanceConfig, ModelConfig, TensorSpec  # noqa: E402
from inferpack.repository import ModelSource  # noqa: E402
from inferpack.workloads import get_workload  # noqa: E402
from inferpack.workloads.weights import build_seeded, save_weights  # noqa: E402

SHAPE = (3, 32, 32)


def _backend(tmp_path: Path, compiled: CompileConfig) -> TorchBackend:
    path = tmp_path / "model.safetensors"
    save_weights(build_seeded(get_workload("small-cnn"), {"seed": 0}), path)
    config = ModelConfig(
        "cnn",
        "workload",
        (TensorSpec("input", "FP32", SHAPE),),
        (TensorSpec("logits", "FP32", (10,)),),
        max_batch_size=8,
        workload="small-cnn",
        instances=InstanceConfig(1, "cuda:0"),
        compile=compiled,
    )
    (backend,) = TorchBackend.load_instances(ModelSource(config, "1", path), TensorStore())
    backend.warm_up({"input": np.zeros((1, *SHAPE), np.float32)})
    return backend


def _expected(x: np.ndarray) -> np.ndarray:
    eager = build_seeded(get_workload("small-cnn"), {"seed": 0}).eval().cuda()
    with torch.inference_mode():
        out: np.ndarray = eager(torch.from_numpy(x).cuda()).cpu().numpy()
    return out


@pytest.mark.parametrize(
    "compiled",
    [
        CompileConfig("cudagraphs", (1, 4)),
        CompileConfig("cudagraphs", (1, 4), channels_last=True),
        CompileConfig("inductor", (1, 4)),
    ],
)
def test_compiled_model_matches_eager_at_and_between_buckets(
    tmp_path: Path, compiled: CompileConfig
) -> None:
    backend = _backend(tmp_path, compiled)
    rng = np.random.default_rng(0)
    for rows in (1, 3, 4, 6):  # 3: padded into bucket 4; 6: over the largest, eager
        x = rng.standard_normal((rows, *SHAPE)).astype(np.float32)
        out = backend.run({"input": x})["logits"]
        np.testing.assert_allclose(out, _expected(x), rtol=1e-3, atol=1e-3)  # TF32 convs


def test_cuda_graphs_count_their_memory_and_return_fresh_outputs(tmp_path: Path) -> None:
    backend = _backend(tmp_path, CompileConfig("cudagraphs", (1, 4)))
    assert backend.memory_bytes > backend.weight_bytes + backend.workspace_bytes  # graph pools
    first = backend.run({"input": np.ones((4, *SHAPE), np.float32)})["logits"]
    kept = first.copy()
    backend.run({"input": np.zeros((4, *SHAPE), np.float32)})
    np.testing.assert_array_equal(first, kept)  # a replay never rewrites returned outputs
