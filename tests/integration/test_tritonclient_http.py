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
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    config = client.get_model_config("tiny-mlp")
    assert config["max_batch_size"] == 64
    assert config["input"][0] == {"name": "input", "data_type": "TYPE_FP32", "dims": [16]}


def test_unknown_model_raises_with_message(client: httpclient.InferenceServerClient) -> None:
    infer_input = httpclient.InferInput("input", [1, 16], "FP32")
    infer_input.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [infer_input])
