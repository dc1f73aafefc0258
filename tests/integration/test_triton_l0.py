"""What Triton's own protocol tests (qa/L0_http/http_test.py, qa/L0_grpc/python_unit_test.py)
ask of a server, asked of inferpack: the same status and, where they check it, the same
words. The cases are theirs (nesting limit, duplicate outputs, a 250,000-deep repository
index body, buffer-size overflow, raw binary requests), on this suite's models; every JSON
endpoint is also sent a body too deep to parse, which must be a 400, never a 500.

Deliberate deviations are listed in the README ("Deliberate deviations from Triton").
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers import ServerThread

NESTING = "JSON nesting depth exceeds maximum allowed limit (100)"
# The identity model takes one input per datatype; every test request fills all nine.
IDENTITY_INPUTS = {
    "in_a": ("BOOL", [True]),
    "in_b": ("UINT8", [1]),
    "in_c": ("INT8", [1]),
    "in_d": ("INT16", [1]),
    "in_e": ("INT32", [1]),
    "in_f": ("INT64", [1]),
    "in_g": ("FP16", [0.5]),
    "in_h": ("FP32", [0.5]),
    "in_i": ("FP64", [0.5]),
}


def _nested(depth: int, value: object) -> object:
    for _ in range(depth):
        value = [value]
    return value


def _post(server: ServerThread, path: str, **kwargs: object) -> requests.Response:
    return requests.post(f"{server.url}{path}", timeout=60, **kwargs)  # type: ignore[arg-type]


def _assert_live(server: ServerThread) -> None:
    assert requests.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200


def _identity_body(int64_data: object) -> dict[str, object]:
    inputs = [
        {"name": name, "datatype": datatype, "shape": [1, 1], "data": data}
        for name, (datatype, data) in IDENTITY_INPUTS.items()
    ]
    inputs[5]["data"] = int64_data  # in_f, INT64
    return {"inputs": inputs}


@pytest.mark.parametrize(
    ("depth", "accepted"), [(50, True), (99, True), (100, False), (120, False)]
)
def test_json_recursion_depth_limit(server: ServerThread, depth: int, accepted: bool) -> None:
    """Triton reads data nested deeper than its shape (right element count) below 100."""
    response = _post(server, "/v2/models/identity/infer", json=_identity_body(_nested(depth, 123)))
    if accepted:
        assert response.status_code == 200, response.text
        out = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert out["out_f"] == [123]
    else:
        assert response.status_code == 400
        assert NESTING in response.json()["error"]


@pytest.mark.parametrize("depth", [50, 120])
def test_bytes_data_nests_under_the_same_limit(server: ServerThread, depth: int) -> None:
    """BYTES data (here small-cnn's upload input, which takes encoded images) is read under
    the same rule: 50 deep reaches the model's image decoding, 120 deep is refused."""
    item = {"name": "images", "datatype": "BYTES", "shape": [1, 1], "data": _nested(depth, "hi")}
    response = _post(server, "/v2/models/small-cnn/infer", json={"inputs": [item]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (NESTING in error) == (depth >= 100), error


def test_duplicate_output_names(server: ServerThread) -> None:
    data = np.zeros(16, np.float32).tolist()
    payload = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [data]}],
        "outputs": [{"name": "output"} for _ in range(2)],
    }
    response = _post(server, "/v2/models/tiny-mlp/infer", json=payload)
    assert response.status_code == 400
    assert "output 'output' already exists in request" in response.json()["error"]
    _assert_live(server)


def test_duplicate_output_names_over_grpc(server: ServerThread) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    item = grpcclient.InferInput("input", [1, 16], "FP32")
    item.set_data_from_numpy(np.zeros((1, 16), np.float32))
    outputs = [grpcclient.InferRequestedOutput("output") for _ in range(2)]
    with pytest.raises(InferenceServerException) as raised:
        client.infer("tiny-mlp", [item], outputs=outputs)
    assert "output 'output' already exists in request" in str(raised.value)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_server_live()


def test_repository_index_deeply_nested_json(server: ServerThread) -> None:
    depth = 250_000
    payload = '{"ready":' + "[" * depth + "true" + "]" * depth + "}"
    response = _post(
        server,
        "/v2/repository/index",
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "Invalid value for 'ready': expected a boolean" in response.json()["error"]
    _assert_live(server)


@pytest.mark.parametrize("ready", ['"yes"', "1", "null"])
def test_repository_index_ready_must_be_a_boolean(server: ServerThread, ready: str) -> None:
    response = _post(server, "/v2/repository/index", data='{"ready": ' + ready + "}")
    assert response.status_code == 400
    assert "Invalid value for 'ready': expected a boolean" in response.json()["error"]
    assert _post(server, "/v2/repository/index", json={"ready": True}).status_code == 200


DEEP = "[" * 250_000 + "]" * 250_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/models/tiny-mlp/infer", '{"inputs": [{"name": "input", "data": ' + DEEP + "}]}"),
        ("/v2/models/tiny-mlp/infer", '{"parameters": {"x": ' + DEEP + "}}"),
        ("/v2/models/tiny-mlp/infer", DEEP),
        ("/v2/repository/index", '{"other": ' + DEEP + "}"),
        ("/v2/repository/models/tiny-mlp/load", '{"parameters": ' + DEEP + "}"),
        ("/v2/repository/models/tiny-mlp/unload", '{"parameters": ' + DEEP + "}"),
        ("/predictions/tiny-mlp", '{"inputs": ' + DEEP + "}"),
        ("/predictions/tiny-mlp", DEEP),
    ],
    ids=["infer-data", "infer-parameters", "infer-bare", "index", "load", "unload", "pred", "bare"],
)
def test_every_json_endpoint_answers_a_too_deep_body_with_400(
    server: ServerThread, path: str, body: str
) -> None:
    response = _post(server, path, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    _assert_live(server)


def test_infer_data_nested_far_too_deep_gets_tritons_message(server: ServerThread) -> None:
    item = {"name": "input", "datatype": "FP32", "shape": [1, 16]}
    body = json.dumps({"inputs": [{**item, "data": None}]}).replace("null", DEEP)
    response = _post(server, "/v2/models/tiny-mlp/infer", data=body)
    assert response.status_code == 400
    assert NESTING in response.json()["error"]


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([2**4, 2**60 + 2], "causes total element count to exceed maximum size of"),
        ([2**2, 2**60 + 2], "byte size overflow for input"),
    ],
)
def test_buffer_size_overflow(server: ServerThread, shape: list[int], message: str) -> None:
    item = {"name": "input", "shape": shape, "datatype": "FP32", "data": [1.0]}
    response = _post(server, "/v2/models/tiny-mlp/infer", json={"inputs": [item]})
    assert response.status_code == 400
    assert message in response.text


def test_raw_binary_needs_a_single_input_model(server: ServerThread) -> None:
    headers = {"Inference-Header-Content-Length": "0"}
    data = np.arange(9, dtype=np.float32).tobytes()
    response = _post(server, "/v2/models/identity/infer", data=data, headers=headers)
    assert response.status_code == 400
    assert (
        "Raw request must only have 1 input (found 1) to be deduced but got 9 inputs in"
        in response.text
    )


def test_raw_binary_round_trips(server: ServerThread) -> None:
    headers = {"Inference-Header-Content-Length": "0"}
    data = np.arange(16, dtype=np.float32).tobytes()
    response = _post(server, "/v2/models/tiny-mlp/infer", data=data, headers=headers)
    assert response.status_code == 200, response.text
    header_size = int(response.headers["Inference-Header-Content-Length"])
    assert len(response.content) - header_size == 4 * 4  # one row of 4 FP32 outputs
