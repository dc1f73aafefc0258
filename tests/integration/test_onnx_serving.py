"""Platform ``onnx`` served by a real server to the real tritonclient (HTTP and gRPC).

A hand-built graph (relu(x @ W + b), symbolic batch dim) must answer as numpy does, alone
and in dynamically formed batches; small-cnn exported with ``torch.onnx.export`` (the
dynamo exporter, dynamic batch dim) must answer as the eager module within 1e-4; a graph
that disagrees with its model.yaml is refused with the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from inferpack.config import ServerConfig  # noqa: E402
from tests.helpers import ServerThread  # noqa: E402
from tests.onnx_models import IN_FEATURES, OUT_FEATURES  # noqa: E402
from tests.onnx_models import dense_relu as _save_dense  # noqa: E402
from tests.onnx_models import dense_relu_expected as _expected  # noqa: E402

RNG = np.random.default_rng(1)
CNN_SHAPE = (3, 64, 64)
SEED = 3
BURST_REQUESTS = 8


def _config(name: str, inputs: list[Any], outputs: list[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "platform": "onnx",
        "max_batch_size": 8,
        "inputs": inputs,
        "outputs": outputs,
        # Long enough that a burst of concurrent requests is run as one or a few batches.
        "dynamic_batching": {"max_queue_delay_us": 100_000},
        "instances": {"count": 2, "device": "cpu"},
    }


def _dense_config(name: str, input_shape: list[int]) -> dict[str, Any]:
    return _config(
        name,
        [{"name": "x", "datatype": "FP32", "shape": input_shape}],
        [{"name": "y", "datatype": "FP32", "shape": [OUT_FEATURES]}],
    )


def _write(repo: Path, config: dict[str, Any]) -> Path:
    """model.yaml for ``config``; returns the path of its ``1/model.onnx``."""
    folder = repo / str(config["name"])
    (folder / "1").mkdir(parents=True)
    (folder / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "1" / "model.onnx"


def _eager_cnn() -> Any:
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import build_seeded

    return build_seeded(get_workload("small-cnn"), {"seed": SEED}).eval()


def _export_cnn(path: Path) -> None:
    """small-cnn through the dynamo exporter (torch.export + onnxscript), batch dynamic."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    batch = torch.export.Dim("batch", min=1, max=32)
    with warnings.catch_warnings():
        # torch.export internals warn about their own deprecated pytree API.
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            _eager_cnn(),
            (torch.zeros(2, *CNN_SHAPE),),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    program.save(str(path))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("onnx")
    _save_dense(_write(repo, _dense_config("dense", [IN_FEATURES])))
    _save_dense(_write(repo, _dense_config("dense-wrong-shape", [IN_FEATURES + 1])))
    cnn = _config(
        "cnn-onnx",
        [{"name": "input", "datatype": "FP32", "shape": list(CNN_SHAPE)}],
        [{"name": "logits", "datatype": "FP32", "shape": [10]}],
    )
    _export_cnn(_write(repo, cnn))
    thread = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.address, concurrency=BURST_REQUESTS)
    yield client
    client.close()


def _http_input(name: str, data: np.ndarray) -> httpclient.InferInput:
    item = httpclient.InferInput(name, list(data.shape), "FP32")
    item.set_data_from_numpy(data)
    return item


def _counts(client: httpclient.InferenceServerClient, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return stats["inference_count"], stats["execution_count"]


def test_http_matches_numpy(http: httpclient.InferenceServerClient) -> None:
    x = RNG.standard_normal((3, IN_FEATURES)).astype(np.float32)
    result = http.infer("dense", [_http_input("x", x)]).as_numpy("y")
    np.testing.assert_allclose(result, _expected(x), rtol=1e-5, atol=1e-6)


def test_grpc_matches_numpy(server: ServerThread) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    x = RNG.standard_normal((2, IN_FEATURES)).astype(np.float32)
    item = grpcclient.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    result = client.infer("dense", [item]).as_numpy("y")
    np.testing.assert_allclose(result, _expected(x), rtol=1e-5, atol=1e-6)
    client.close()


def test_concurrent_requests_are_batched_and_match_numpy(
    http: httpclient.InferenceServerClient,
) -> None:
    datas = [
        RNG.standard_normal((1 + index % 3, IN_FEATURES)).astype(np.float32)
        for index in range(BURST_REQUESTS)
    ]
    rows_before, executions_before = _counts(http, "dense")

    pending = [http.async_infer("dense", [_http_input("x", data)]) for data in datas]
    results = [request.get_result().as_numpy("y") for request in pending]

    for data, result in zip(datas, results, strict=True):
        np.testing.assert_allclose(result, _expected(data), rtol=1e-5, atol=1e-6)
    rows, executions = _counts(http, "dense")
    assert rows - rows_before == sum(len(data) for data in datas)
    assert executions - executions_before < BURST_REQUESTS


def test_exported_small_cnn_matches_the_torch_model(
    http: httpclient.InferenceServerClient,
) -> None:
    import torch

    data = np.random.default_rng(1).standard_normal((5, *CNN_SHAPE)).astype(np.float32)
    result = http.infer("cnn-onnx", [_http_input("input", data)]).as_numpy("logits")
    with torch.inference_mode():
        expected = _eager_cnn()(torch.from_numpy(data)).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4)


def test_a_graph_that_disagrees_with_model_yaml_is_refused_with_the_reason(
    http: httpclient.InferenceServerClient,
) -> None:
    index = {row["name"]: row for row in http.get_model_repository_index()}
    assert index["dense-wrong-shape"]["state"] == "UNAVAILABLE"
    assert (
        "input 'x': shape: dim 1 is 6 in the graph, 7 in model.yaml"
        in (index["dense-wrong-shape"]["reason"])
    )
    assert index["dense"]["state"] == "READY"
    assert index["cnn-onnx"]["state"] == "READY"
