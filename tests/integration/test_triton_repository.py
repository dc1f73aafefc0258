"""A Triton-style repository (config.pbtxt, no model.yaml) served by the real server.

small-cnn is written as Triton lays it out, ``small-cnn/config.pbtxt`` + ``small-cnn/1/model.pt``
(traced TorchScript) and, with the ONNX Runtime backend, ``small-cnn-onnx/1/model.onnx``; the
real tritonclient must get the eager module's outputs, and ``repo list`` must list both.
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from torch import nn

from inferpack.config import ServerConfig
from inferpack.workloads import get_workload
from inferpack.workloads.weights import build_seeded
from tests.helpers import ServerThread
from tests.integration.cli_server import inferpack

SEED = 5
LABELS = [f"digit {i}" for i in range(10)]
CNN_SHAPE = (3, 64, 64)
CONFIG = """
name: "{name}"
platform: "{platform}"
max_batch_size: 8
input [ {{ name: "input", data_type: TYPE_FP32, format: FORMAT_NCHW, dims: [ 3, 64, 64 ] }} ]
output [ {{ name: "logits", data_type: TYPE_FP32, dims: [ 10 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


def _eager() -> nn.Module:
    return build_seeded(get_workload("small-cnn"), {"seed": SEED}).eval()


def _write(repo: Path, name: str, platform: str) -> Path:
    """config.pbtxt for ``name``; returns the version folder for the artifact."""
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name, platform=platform))
    return repo / name / "1"


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():  # torch's exporter warns about its own internals
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        _torch_onnx_export(module, example, path)


def _torch_onnx_export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=8)},),
        dynamo=True,
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton-repo")
    example = torch.zeros(2, *CNN_SHAPE)
    with torch.inference_mode():
        traced = torch.jit.trace(_eager(), example)
    traced.save(str(_write(root, "small-cnn", "pytorch_libtorch") / "model.pt"))
    # Triton's labels for the classification extension, beside config.pbtxt.
    config = root / "small-cnn" / "config.pbtxt"
    config.write_text(
        config.read_text().replace("dims: [ 10 ] }", 'dims: [ 10 ], label_filename: "labels.txt" }')
    )
    (root / "small-cnn" / "labels.txt").write_text("".join(f"{c}\n" for c in LABELS))
    return root


@pytest.fixture(scope="module")
def onnx_model(repo: Path) -> str:
    """small-cnn exported to ONNX beside the TorchScript one, when the backend exists."""
    pytest.importorskip("inferpack.backends.onnx_backend")
    pytest.importorskip("onnxruntime")
    _export_onnx(
        _eager(),
        torch.zeros(2, *CNN_SHAPE),
        _write(repo, "small-cnn-onnx", "onnxruntime_onnx") / "model.onnx",
    )
    return "small-cnn-onnx"


@pytest.fixture(scope="module")
def client(repo: Path, onnx_model: str) -> Iterator[httpclient.InferenceServerClient]:
    thread = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()
    client = httpclient.InferenceServerClient(thread.address)
    yield client
    client.close()
    thread.stop()


def _infer(client: httpclient.InferenceServerClient, model: str, data: np.ndarray) -> np.ndarray:
    item = httpclient.InferInput("input", list(data.shape), "FP32")
    item.set_data_from_numpy(data)
    out: np.ndarray = client.infer(model, [item]).as_numpy("logits")
    return out


def _expected(data: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = _eager()(torch.from_numpy(data)).numpy()
    return out


@pytest.mark.parametrize("model", ["small-cnn", "small-cnn-onnx"])
def test_config_pbtxt_model_answers_as_the_eager_module(
    client: httpclient.InferenceServerClient, model: str
) -> None:
    data = np.random.default_rng(4).standard_normal((3, *CNN_SHAPE)).astype(np.float32)
    np.testing.assert_allclose(_infer(client, model, data), _expected(data), rtol=1e-4, atol=1e-5)


def test_metadata_comes_from_config_pbtxt(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("small-cnn")
    assert metadata["platform"] == "pytorch_libtorch"  # Triton's name, as the file said
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]


def test_repo_list_shows_config_pbtxt_models(repo: Path, onnx_model: str) -> None:
    listed = subprocess.run(
        inferpack("repo", "list", str(repo)), capture_output=True, text=True, check=True
    )
    assert listed.stdout.splitlines() == [
        "small-cnn\ttorchscript\tmodel.pt\tv1",
        "small-cnn-onnx\tonnx\tmodel.onnx\tv1",
    ]


def test_label_filename_names_the_classes_of_class_count(
    client: httpclient.InferenceServerClient,
) -> None:
    data = np.random.default_rng(6).standard_normal((2, *CNN_SHAPE)).astype(np.float32)
    item = httpclient.InferInput("input", list(data.shape), "FP32")
    item.set_data_from_numpy(data)
    wanted = [httpclient.InferRequestedOutput("logits", class_count=3)]
    classes = client.infer("small-cnn", [item], outputs=wanted).as_numpy("logits")
    assert classes is not None and classes.shape == (2, 3)
    for row, expected in zip(classes, _expected(data), strict=True):
        top = np.argsort(-expected, kind="stable")[:3]
        parsed = [item.decode().split(":", 2) for item in row]
        assert [int(index) for _, index, _ in parsed] == list(top)
        assert [label for _, _, label in parsed] == [LABELS[i] for i in top]
        assert np.allclose([float(v) for v, _, _ in parsed], expected[top], atol=1e-5)
    config = client.get_model_config("small-cnn")
    assert config["output"][0]["label_filename"] == "labels.txt"
