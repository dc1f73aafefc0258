"""Compiled models served by a real server to the real tritonclient: a torch.export +
AOTInductor package (platform ``torch_aoti``) and a workload compiled per bucket with
torch.compile (``compile.mode: inductor``); both must answer as the eager module does, at
bucket sizes, between them (padded) and above the largest bucket (split)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
import yaml
from torch import nn
from torch.export import Dim

from inferpack.config import ServerConfig
from inferpack.workloads import get_workload
from inferpack.workloads.weights import build_seeded, save_weights
from tests.helpers import ServerThread

SEED = 5
MODELS = ("mlp-aoti", "mlp-inductor")


def _eager() -> nn.Module:
    return build_seeded(get_workload("tiny-mlp"), {"seed": SEED}).eval()


def _write(repo: Path, name: str, platform: str, **changes: Any) -> Path:
    config = {
        "name": name,
        "platform": platform,
        "max_batch_size": 8,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [16]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [4]}],
        "instances": {"count": 1, "device": "cpu"},
        **changes,
    }
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return repo / name / "1"


def _write_repository(repo: Path) -> None:
    folder = _write(repo, "mlp-aoti", "torch_aoti", compile={"batch_buckets": [1, 4]})
    batch = Dim("batch", min=1, max=8)
    program = torch.export.export(_eager(), (torch.zeros(2, 16),), dynamic_shapes=({0: batch},))
    with warnings.catch_warnings():  # torch's own deprecated pytree use while packaging
        warnings.simplefilter("ignore", FutureWarning)
        torch._inductor.aoti_compile_and_package(program, package_path=str(folder / "model.pt2"))
    inductor = {"mode": "inductor", "batch_buckets": [1, 4]}
    workload = {"workload": "tiny-mlp", "workload_options": {"seed": SEED}}
    folder = _write(repo, "mlp-inductor", "workload", compile=inductor, **workload)
    save_weights(_eager(), folder / "model.safetensors")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpclient.InferenceServerClient]:
    repo = tmp_path_factory.mktemp("compiled")
    _write_repository(repo)
    server = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=None)).start()
    client = httpclient.InferenceServerClient(server.address)
    yield client
    client.close()
    server.stop()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("rows", [1, 3, 4, 7])
def test_compiled_model_answers_as_eager(
    client: httpclient.InferenceServerClient, model: str, rows: int
) -> None:
    assert client.is_model_ready(model)
    data = np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32)
    item = httpclient.InferInput("input", list(data.shape), "FP32")
    item.set_data_from_numpy(data)
    result = client.infer(model, [item]).as_numpy("output")
    with torch.inference_mode():
        expected = _eager()(torch.from_numpy(data)).numpy()
    assert result.shape == (rows, 4)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
