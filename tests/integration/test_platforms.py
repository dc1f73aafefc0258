"""Every artifact platform served by a real server to the real tritonclient.

One seeded small-cnn is written as workload + safetensors, traced TorchScript, frozen
TorchScript and a torch.export program with a dynamic batch dim; each served model must
answer as the eager module does in this process, alone and in dynamically formed batches.
Artifacts that cannot run as configured must be refused with a reason, not served wrong.
"""

from __future__ import annotations

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

from inferpack.bench.accuracy import compare
from inferpack.config import ServerConfig
from inferpack.workloads import get_workload
from inferpack.workloads.weights import build_seeded, save_weights
from tests.helpers import ServerThread

SEED = 3
CNN_SHAPE = (3, 64, 64)
EXACT = ("cnn-workload", "cnn-traced", "cnn-frozen", "cnn-export")
BURST_REQUESTS = 8
WEIGHTS = "model.safetensors"


def _eager() -> nn.Module:
    return build_seeded(get_workload("small-cnn"), {"seed": SEED})


def _cnn_config(name: str, platform: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "platform": platform,
        "max_batch_size": 32,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(CNN_SHAPE)}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [10]}],
        # Long enough that a burst of concurrent requests is run as one or a few batches.
        "dynamic_batching": {"max_queue_delay_us": 100_000},
        "instances": {"count": 1, "device": "cpu"},
        **changes,
    }


def _write(repo: Path, config: dict[str, Any]) -> Path:
    """model.yaml for ``config``; returns the version folder for the artifact."""
    folder = repo / str(config["name"])
    (folder / "1").mkdir(parents=True)
    (folder / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "1"


def _export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = Dim("batch", min=1, max=32)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


class _FixedDtype(nn.Module):
    """Writes fp32 into its graph (``.float()``): cannot be served at bf16."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out.float()


def _small_config(name: str, **changes: Any) -> dict[str, Any]:
    return _cnn_config(
        name,
        "torch_export",
        inputs=[{"name": "input", "datatype": "FP32", "shape": [4]}],
        outputs=[{"name": "logits", "datatype": "FP32", "shape": [4]}],
        **changes,
    )


def _write_repository(repo: Path) -> None:
    eager = _eager()
    example = torch.zeros(2, *CNN_SHAPE)
    workload = {"workload": "small-cnn", "workload_options": {"seed": SEED}}
    for name, changes in (
        ("cnn-workload", workload),
        ("cnn-workload-bf16-storage", {**workload, "storage_precision": "bf16"}),
    ):
        save_weights(eager, _write(repo, _cnn_config(name, "workload", **changes)) / WEIGHTS)
    traced = torch.jit.trace(eager, example)
    traced.save(str(_write(repo, _cnn_config("cnn-traced", "torchscript")) / "model.pt"))
    frozen = torch.jit.freeze(torch.jit.script(eager))
    frozen.save(str(_write(repo, _cnn_config("cnn-frozen", "torchscript")) / "model.pt"))
    bf16_frozen = _cnn_config("cnn-frozen-bf16", "torchscript", precision="bf16")
    frozen.save(str(_write(repo, bf16_frozen) / "model.pt"))
    exported: tuple[tuple[str, dict[str, str]], ...] = (
        ("cnn-export", {}),
        ("cnn-export-bf16", {"precision": "bf16"}),
        ("cnn-export-bf16-storage", {"storage_precision": "bf16"}),
    )
    for name, fields in exported:
        folder = _write(repo, _cnn_config(name, "torch_export", **fields))
        _export(eager, example, folder / "model.pt2")
    training = _write(repo, _cnn_config("cnn-export-train", "torch_export"))
    _export(_eager().train(), example, training / "model.pt2")
    fixed = _small_config("fixed-dtype-bf16", precision="bf16")
    _export(_FixedDtype().eval(), torch.zeros(2, 4), _write(repo, fixed) / "model.pt2")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("platforms")
    _write_repository(repo)
    thread = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.address, concurrency=BURST_REQUESTS)
    yield client
    client.close()


def _input(data: np.ndarray) -> httpclient.InferInput:
    item = httpclient.InferInput("input", list(data.shape), "FP32")
    item.set_data_from_numpy(data)
    return item


def _expected(data: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = _eager()(torch.from_numpy(data)).numpy()
    return out


def _counts(client: httpclient.InferenceServerClient, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return stats["inference_count"], stats["execution_count"]


@pytest.mark.parametrize("model", EXACT)
def test_one_row_matches_the_eager_model(
    client: httpclient.InferenceServerClient, model: str
) -> None:
    data = np.random.default_rng(1).standard_normal((1, *CNN_SHAPE)).astype(np.float32)
    result = client.infer(model, [_input(data)])
    np.testing.assert_allclose(result.as_numpy("logits"), _expected(data), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", EXACT)
def test_concurrent_requests_are_batched_and_match_the_eager_model(
    client: httpclient.InferenceServerClient, model: str
) -> None:
    """Requests of 1-3 rows sent at once: the server runs them as batches of several
    requests (fewer executions than requests) and each gets its own rows back."""
    rng = np.random.default_rng(2)
    datas = [
        rng.standard_normal((1 + index % 3, *CNN_SHAPE)).astype(np.float32)
        for index in range(BURST_REQUESTS)
    ]
    rows_before, executions_before = _counts(client, model)

    pending = [client.async_infer(model, [_input(data)]) for data in datas]
    results = [request.get_result() for request in pending]

    for data, result in zip(datas, results, strict=True):
        np.testing.assert_allclose(result.as_numpy("logits"), _expected(data), rtol=1e-5, atol=1e-6)
    rows, executions = _counts(client, model)
    assert rows - rows_before == sum(len(data) for data in datas)
    assert executions - executions_before < BURST_REQUESTS


@pytest.mark.parametrize(
    ("model", "max_relative_l2"),
    [
        ("cnn-export-bf16", 5e-2),  # computes in bf16
        ("cnn-export-bf16-storage", 1e-2),  # bf16 weights, fp32 compute
        ("cnn-workload-bf16-storage", 1e-2),
    ],
)
def test_narrow_precisions_stay_close_to_fp32(
    client: httpclient.InferenceServerClient, model: str, max_relative_l2: float
) -> None:
    data = np.random.default_rng(3).standard_normal((4, *CNN_SHAPE)).astype(np.float32)
    result = client.infer(model, [_input(data)]).as_numpy("logits")
    accuracy = compare({"logits": _expected(data)}, {"logits": result})
    relative_l2 = accuracy["relative_l2"]
    assert isinstance(relative_l2, float) and 0 < relative_l2 < max_relative_l2
    assert accuracy["top1_agreement"] == 1.0


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("cnn-frozen-bf16", "graph constants or attributes"),
        ("cnn-export-train", "exported in training mode"),
        ("fixed-dtype-bf16", "fixes dtype torch.float32"),
    ],
)
def test_artifacts_that_cannot_run_as_configured_are_refused_with_the_reason(
    client: httpclient.InferenceServerClient, model: str, reason: str
) -> None:
    index = {row["name"]: row for row in client.get_model_repository_index()}
    assert index[model]["state"] == "UNAVAILABLE"
    assert reason in index[model]["reason"]
    assert index["cnn-export"]["state"] == "READY"
