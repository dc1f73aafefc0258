"""The real tritonclient[http], unmodified, against a real inferpack server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import ServerThread, reference_outputs

CASES = [("tiny-mlp", (3, 16), "input", "output"), ("small-cnn", (2, 3, 64, 64), "input", "logits")]


@pytest.fixture
def client(server: ServerThread) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.address)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(("model", "shape", "input_name", "output_name"), CASES)
def test_infer_matches_in_process_model(
    client: httpclient.InferenceServerClient,
    model_repo: Path,
    model: str,
    shape: tuple[int, ...],
    input_name: str,
    output_name: str,
    binary: bool,
) -> None:
    data = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    infer_input = httpclient.InferInput(input_name, list(shape), "FP32")
    infer_input.set_data_from_numpy(data, binary_data=binary)
    requested = [httpclient.InferRequestedOutput(output_name, binary_data=binary)]

    result = client.infer(model, [infer_input], outputs=requested)

    expected = reference_outputs(model_repo, model, data)[0]
    np.testing.assert_allclose(result.as_numpy(output_name), expected, rtol=1e-5, atol=1e-6)
    assert result.get_response()["model_name"] == model


def test_default_outputs_come_back_binary(client: httpclient.InferenceServerClient) -> None:
    data = np.ones((1, 16), dtype=np.float32)
    infer_input = httpclient.InferInput("input", [1, 16], "FP32")
    infer_input.set_data_from_numpy(data)
    result = client.infer("tiny-mlp", [infer_input])  # asks binary_data_output
    output = result.get_output("output")
    assert output is not None and "binary_data_size" in output["parameters"]
    assert result.as_numpy("output").shape == (1, 4)


def test_health_metadata_and_config(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tiny-mlp")
    assert client.is_model_ready("tiny-mlp", "1")
    server_meta = client.get_server_metadata()
    assert server_meta["name"] == "inferpack"
    assert "binary_tensor_data" in server_meta["extensions"]
    meta = client.get_model_metadata("small-cnn")
    assert meta["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]},
        {"name": "images", "datatype": "BYTES", "shape": [-1, 1]},  # the upload input
    ]
    config = client.get_model_config("tiny-mlp")
    assert config["max_batch_size"] == 64
    assert config["input"][0] == {"name": "input", "data_type": "TYPE_FP32", "dims": [16]}


def test_unknown_model_raises_with_message(client: httpclient.InferenceServerClient) -> None:
    infer_input = httpclient.InferInput("input", [1, 16], "FP32")
    infer_input.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="unknown model: 'nope' is not found"):
        client.infer("nope", [infer_input])


def test_statistics_extension_counts_requests_and_batches(
    client: httpclient.InferenceServerClient,
) -> None:
    assert "statistics" in client.get_server_metadata()["extensions"]
    before = client.get_inference_statistics("small-cnn")["model_stats"][0]
    data = np.zeros((2, 3, 64, 64), dtype=np.float32)
    for _ in range(3):
        infer_input = httpclient.InferInput("input", list(data.shape), "FP32")
        infer_input.set_data_from_numpy(data)
        client.infer("small-cnn", [infer_input])
    after = client.get_inference_statistics("small-cnn", "1")["model_stats"][0]
    assert after["name"] == "small-cnn" and after["version"] == "1"
    assert after["inference_count"] - before["inference_count"] == 6  # rows
    assert after["execution_count"] - before["execution_count"] == 3
    stats, old = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] - old["success"]["count"] == 3
    assert stats["queue"]["count"] - old["queue"]["count"] == 3
    assert stats["compute_infer"]["ns"] > old["compute_infer"]["ns"]
    assert any(b["batch_size"] == 2 for b in after["batch_stats"])
    everything = client.get_inference_statistics()["model_stats"]
    assert {"small-cnn", "tiny-mlp"} <= {s["name"] for s in everything}
    with pytest.raises(InferenceServerException, match="no loaded version '7'"):
        client.get_inference_statistics("small-cnn", "7")
