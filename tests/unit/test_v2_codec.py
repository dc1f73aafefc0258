from __future__ import annotations

import json

import numpy as np
import pytest

from inferpack.errors import InvalidInputError
from inferpack.protocol.v2_codec import decode_infer_request, encode_infer_response
from inferpack.types import InferResponse


def _binary_request(arrays: dict[str, np.ndarray], datatype: str = "FP32") -> tuple[bytes, int]:
    header = {
        "inputs": [
            {
                "name": k,
                "datatype": datatype,
                "shape": list(v.shape),
                "parameters": {"binary_data_size": v.nbytes},
            }
            for k, v in arrays.items()
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
    }
    raw = json.dumps(header).encode()
    return raw + b"".join(v.tobytes() for v in arrays.values()), len(raw)


def test_binary_inputs_are_sliced_in_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 1), dtype=np.float32)
    body, length = _binary_request({"a": a, "b": b})
    request, encoding = decode_infer_request(body, length, "m", None)
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["b"], b)
    assert request.requested_outputs == ["y", "z"]
    assert encoding.is_binary("y") and not encoding.is_binary("z")


def test_json_nested_and_flat_data_are_equivalent() -> None:
    flat = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    nested = {
        "inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]
    }
    for body in (flat, nested):
        request, _ = decode_infer_request(json.dumps(body).encode(), None, "m", "1")
        np.testing.assert_array_equal(request.inputs["x"], np.array([[1, 2], [3, 4]], np.int32))
        assert request.model_version == "1"


def test_bytes_and_bool_in_json() -> None:
    body = {
        "inputs": [
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["hi", "there"]},
            {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ]
    }
    request, _ = decode_infer_request(json.dumps(body).encode(), None, "m", None)
    assert list(request.inputs["s"]) == [b"hi", b"there"]
    assert request.inputs["b"].dtype == np.bool_


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}, "out of range for INT8"),
        ({"name": "x", "datatype": "INT32", "shape": [1], "data": [1.5]}, "floating-point values"),
        ({"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}, "ragged"),
        ({"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}, "non-negative integers"),
        ({"name": "x", "datatype": "FP32", "shape": [1]}, "neither 'data' nor binary_data_size"),
        ({"datatype": "FP32", "shape": [1], "data": [1]}, "'name' must be a non-empty string"),
        ({"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}, "do not fit datatype BOOL"),
    ],
)
def test_invalid_json_tensors_name_the_problem(item: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_infer_request(json.dumps({"inputs": [item]}).encode(), None, "m", None)


def test_duplicate_inputs_are_refused() -> None:
    item = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}
    with pytest.raises(InvalidInputError, match="appears more than once"):
        decode_infer_request(json.dumps({"inputs": [item, item]}).encode(), None, "m", None)


def test_response_mixes_json_and_binary_outputs() -> None:
    response = InferResponse(
        "m",
        "1",
        {
            "y": np.array([[1.5, 2.5]], dtype=np.float32),
            "z": np.array([[1, 2]], dtype=np.int64),
        },
        id="7",
    )
    body, length = decode_round = _encode(response, binary_all=False, binary={"y": True})
    assert length is not None
    header = json.loads(body[:length])
    assert header["id"] == "7"
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][1]["data"] == [1, 2]
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32), [1.5, 2.5])
    assert decode_round[1] == length


def _encode(
    response: InferResponse, binary_all: bool, binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    from inferpack.protocol.v2_codec import OutputEncoding

    return encode_infer_response(response, OutputEncoding(binary_all, binary))


def test_all_json_response_has_no_header_length() -> None:
    response = InferResponse("m", "1", {"s": np.array([b"a", b"b"], dtype=np.object_)})
    body, length = _encode(response, False, {})
    assert length is None
    assert json.loads(body)["outputs"][0] == {
        "name": "s",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["a", "b"],
    }
