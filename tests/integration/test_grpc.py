"""The real tritonclient[grpc], unmodified, against inferpack's gRPC endpoint."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import TEST_MAX_REQUEST_BYTES
from tests.helpers import ServerThread, reference_outputs


@pytest.fixture
def client(server: ServerThread) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_address)


def _input(name: str, data: np.ndarray, datatype: str = "FP32") -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(data.shape), datatype)
    item.set_data_from_numpy(data)
    return item


def test_infer_raw_contents_matches_rest_and_in_process(
    client: grpcclient.InferenceServerClient, server: ServerThread, model_repo: Path
) -> None:
    data = np.random.default_rng(11).standard_normal((2, 3, 64, 64)).astype(np.float32)
    result = client.infer("small-cnn", [_input("input", data)], request_id="r-1")
    rest = httpclient.InferenceServerClient(server.address)
    rest_input = httpclient.InferInput("input", list(data.shape), "FP32")
    rest_input.set_data_from_numpy(data)
    over_rest = rest.infer("small-cnn", [rest_input]).as_numpy("logits")

    got = result.as_numpy("logits")
    np.testing.assert_array_equal(got, over_rest)
    expected = reference_outputs(model_repo, "small-cnn", data)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert result.get_response().id == "r-1"
    assert result.get_response().model_version == "1"


def test_every_numeric_datatype_round_trips(client: grpcclient.InferenceServerClient) -> None:
    from tests.conftest import IDENTITY_DATATYPES
    from tests.integration.test_datatypes import _sample

    rng = np.random.default_rng(2)
    inputs, expected = [], {}
    for letter, datatype in zip("abcdefghi", IDENTITY_DATATYPES, strict=True):
        data = _sample(datatype, rng)
        inputs.append(_input(f"in_{letter}", data, datatype))
        expected[f"out_{letter}"] = data
    result = client.infer("identity", inputs)
    for name, data in expected.items():
        np.testing.assert_array_equal(result.as_numpy(name), data)


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny-mlp")
    server_meta = client.get_server_metadata()
    assert server_meta.name == "inferpack" and "model_repository" in server_meta.extensions
    meta = client.get_model_metadata("tiny-mlp", as_json=True)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert meta["versions"] == ["1"]
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "tiny-mlp", "version": "1", "state": "READY"} in index


@pytest.mark.parametrize(
    ("model", "data", "code", "message"),
    [
        (
            "tiny-mlp",
            np.zeros((1, 15), np.float32),
            "StatusCode.INVALID_ARGUMENT",
            "does not match model shape",
        ),
        (
            "nope",
            np.zeros((1, 16), np.float32),
            "StatusCode.NOT_FOUND",
            "unknown model: 'nope' is not found",
        ),
        (
            "tiny-mlp",
            np.zeros((1, 16), np.float64),
            "StatusCode.INVALID_ARGUMENT",
            "datatype FP64 does not match",
        ),
    ],
)
def test_bad_input_gets_grpc_codes(
    client: grpcclient.InferenceServerClient, model: str, data: np.ndarray, code: str, message: str
) -> None:
    datatype = "FP64" if data.dtype == np.float64 else "FP32"
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [_input("input", data, datatype)])
    assert raised.value.status() == code
    assert message in raised.value.message()
    assert client.is_server_live()


def test_model_failure_is_internal_and_message_too_large_is_exhausted(
    client: grpcclient.InferenceServerClient,
) -> None:
    poisoned = np.full((4, 4), -5000.0, np.float32)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("poison", [_input("x", poisoned)])
    assert raised.value.status() == "StatusCode.INTERNAL"
    assert "poisoned input" in raised.value.message()
    huge = np.zeros((64, TEST_MAX_REQUEST_BYTES // 64 // 4 + 1), np.float32)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("slow", [_input("input", huge)])
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_full_queue_is_resource_exhausted(server: ServerThread) -> None:
    def send(_: int) -> str:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        try:
            client.infer("slow", [_input("input", np.ones((1, 3), np.float32))])
        except InferenceServerException as error:
            return str(error.status())
        return "OK"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(send, range(8)))
    assert codes.count("StatusCode.RESOURCE_EXHAUSTED") >= 3, codes
    assert set(codes) == {"OK", "StatusCode.RESOURCE_EXHAUSTED"}


def test_control_disabled_in_mode_none(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.unload_model("tiny-mlp")
    assert raised.value.status() == str(grpc.StatusCode.UNAVAILABLE)
    assert "--model-control-mode" in raised.value.message()
    assert client.is_model_ready("tiny-mlp")
