from __future__ import annotations

import json
import re
import tracemalloc

import numpy as np
import pytest

from inferpack.datatypes import numpy_dtype
from inferpack.errors import InvalidInputError
from inferpack.protocol.v2_codec import (
    decode_infer_request,
    encode_infer_response,
    raw_input_shape,
)
from inferpack.types import InferResponse

# Triton's refusal of data nested 100 deep (qa/L0_http test_json_recursion_depth_limit).
TRITON_NESTING = re.escape("JSON nesting depth exceeds maximum allowed limit (100)")


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
    with pytest.raises(InvalidInputError, match="input 'x' already exists in request"):
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


# --- malformed input never escapes as anything but InvalidInputError -------------------


def _decode_json(payload: object) -> dict[str, np.ndarray]:
    request, _ = decode_infer_request(json.dumps(payload).encode(), None, "m", None)
    return request.inputs


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "must be a JSON object"),
        (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", re.escape("inputs[0] must be")),
        (b'{"other": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", TRITON_NESTING),
        (b'{"id": NaN, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", TRITON_NESTING),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": '
            + b"[" * 5000
            + b"1"
            + b"]" * 5000
            + b"}]}",
            TRITON_NESTING,
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": '
            + b"[" * 100
            + b'"a"'
            + b"]" * 100
            + b"}]}",
            TRITON_NESTING,
        ),
        (b'{"inputs": [{"name": "\xff\xfe"}]}', "malformed JSON"),
        (b'{"inputs": [5]}', re.escape("inputs[0] must be a JSON object")),
        (b'{"inputs": 5}', "'inputs' must be a non-empty list"),
    ],
)
def test_hostile_bodies_are_invalid_input(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_infer_request(body, None, "m", None)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([1] * 33, "more than the 32 supported"),
        ([0, 2**62], "byte size overflow for input 'x'"),  # 2**64 bytes of FP32
        ([2**40, 2**40], "causes total element count to exceed maximum size of"),
        ([2**40 + 1], "causes total element count to exceed maximum size of"),
        ([True], "non-negative integers"),
        ("12", "non-negative integers"),
    ],
)
def test_shapes_numpy_cannot_hold_are_refused(shape: object, message: str) -> None:
    binary = {"name": "x", "datatype": "FP32", "shape": shape}
    binary["parameters"] = {"binary_data_size": 0}
    for item in (binary, {"name": "x", "datatype": "FP32", "shape": shape, "data": []}):
        with pytest.raises(InvalidInputError, match=message):
            _decode_json({"inputs": [item]})


def test_nan_and_infinity_literals_reach_float_tensors_only() -> None:
    item = b'{"name": "x", "datatype": "FP32", "shape": [3], "data": [NaN, Infinity, -Infinity]}'
    body = b'{"inputs": [' + item + b"]}"
    request, _ = decode_infer_request(body, None, "m", None)
    value = request.inputs["x"]
    assert np.isnan(value[0]) and value[1] == np.inf and value[2] == -np.inf
    with pytest.raises(InvalidInputError, match="floating-point values"):
        decode_infer_request(body.replace(b"FP32", b"INT32"), None, "m", None)


def test_doubles_beyond_fp16_become_infinite_without_a_warning() -> None:
    inputs = _decode_json(
        {"inputs": [{"name": "x", "datatype": "FP16", "shape": [2], "data": [1e6, -1e6]}]}
    )
    assert inputs["x"].dtype == np.float16 and list(inputs["x"]) == [np.inf, -np.inf]


def test_bytes_element_running_past_the_buffer_is_refused() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 6},
                }
            ]
        }
    ).encode()
    body = header + (100).to_bytes(4, "little") + b"ab"
    with pytest.raises(InvalidInputError, match="overruns the tensor data"):
        decode_infer_request(body, len(header), "m", None)


def test_lone_surrogates_in_bytes_strings_do_not_crash() -> None:
    body = b'{"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}'
    with pytest.raises(InvalidInputError, match="malformed JSON"):
        decode_infer_request(body, None, "m", None)
    # The NaN fallback (Python's json) reads the surrogate; it travels as bytes.
    request, _ = decode_infer_request(body[:-1] + b', "id": NaN}', None, "m", None)
    assert request.inputs["s"][0] == "\ud800".encode("utf-8", "surrogatepass")


# --- JSON data: every datatype, flat and nested, exactly as the object path reads it ---


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False, True, True, False, False]),
        ("UINT8", [0, 255, 1, 2, 3, 4]),
        ("UINT16", [0, 65535, 1, 2, 3, 4]),
        ("UINT32", [0, 2**32 - 1, 1, 2, 3, 4]),
        ("UINT64", [0, 2**64 - 1, 2**63, 2, 3, 4]),
        ("INT8", [-128, 127, 0, 1, -1, 2]),
        ("INT16", [-(2**15), 2**15 - 1, 0, 1, -1, 2]),
        ("INT32", [-(2**31), 2**31 - 1, 0, 1, -1, 2]),
        ("INT64", [-(2**63), 2**63 - 1, 0, 1, -1, 2]),
        ("FP16", [0.5, -1.25, 65504.0, 1e-7, 3, -0.0]),
        ("FP32", [0.1, -2.5e-30, 3.4e38, 7, 1e-45, 0.30000001192092896]),
        ("FP64", [0.1, -2.5e-300, 1.7976931348623157e308, 7, 5e-324, 2**53 + 1]),
    ],
)
def test_every_datatype_decodes_flat_and_nested(datatype: str, values: list[object]) -> None:
    dtype = numpy_dtype(datatype)
    exact = np.array(values, dtype=np.float64 if dtype.kind == "f" else dtype)
    expected = exact.astype(dtype).reshape(2, 3)
    nested = [values[:3], values[3:]]
    for data in (values, nested):
        item = {"name": "x", "datatype": datatype, "shape": [2, 3], "data": data}
        got = _decode_json({"inputs": [item]})["x"]
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("UINT8", [256], "out of range for UINT8"),
        ("UINT64", [-1], "out of range for UINT64"),
        ("UINT64", [2**64], "out of range for UINT64"),
        ("INT64", [2**63], "out of range for INT64"),
        ("INT16", [1.0], "floating-point values"),
        ("FP32", [True, 1.5], "boolean values"),
        ("FP32", [1, None], "mixed or null"),
        ("FP32", [1, {"a": 1}], "mixed or null"),
        ("FP32", [[1, 2], [3]], "ragged"),
        ("FP32", [[1, 2], 3], "ragged"),
        ("FP32", [1, [2]], "ragged"),
        ("FP32", [[1], []], "ragged"),
        ("FP32", [[], [1]], "ragged"),
        ("FP32", [[[1, 2]], [[3], [4]]], "ragged"),
        ("FP64", [1e999], "out of range"),
        ("BOOL", [1, 0], "do not fit datatype BOOL"),
    ],
)
def test_json_data_the_object_path_would_refuse_is_refused(
    datatype: str, data: list[object], message: str
) -> None:
    item = {"name": "x", "datatype": datatype, "shape": [len(data)], "data": data}
    body = json.dumps({"inputs": [item]}).replace("Infinity", "1e999").encode()
    with pytest.raises(InvalidInputError, match=message):
        decode_infer_request(body, None, "m", None)


def _nested_body(datatype: str, depth: int, value: str) -> bytes:
    """One input of shape [1, 1] whose data is ``value`` inside ``depth`` lists."""
    data = "[" * depth + value + "]" * depth
    item = f'{{"name":"x","datatype":"{datatype}","shape":[1,1],"data":{data}}}'
    return f'{{"inputs":[{item}]}}'.encode()


SCALARS = [("INT64", "123"), ("FP32", "1.5"), ("BYTES", '"hi"')]


@pytest.mark.parametrize(("datatype", "value"), SCALARS)
@pytest.mark.parametrize("depth", [1, 33, 50, 99])
def test_data_nested_deeper_than_its_shape_is_read_as_triton_reads_it(
    datatype: str, value: str, depth: int
) -> None:
    """Triton reads ``data`` in row-major order whatever its nesting (below 100 deep): only
    the element count must match the shape (qa/L0_http: depth 50, shape [1, 1])."""
    body = _nested_body(datatype, depth, value)
    request, _ = decode_infer_request(body, None, "m", None)
    assert request.inputs["x"].shape == (1, 1)
    assert request.inputs["x"][0, 0] == {"INT64": 123, "FP32": 1.5, "BYTES": b"hi"}[datatype]


@pytest.mark.parametrize(("datatype", "value"), SCALARS)
@pytest.mark.parametrize("depth", [100, 120, 900, 5000])
def test_data_nested_100_deep_is_refused_in_tritons_words(
    datatype: str, value: str, depth: int
) -> None:
    body = _nested_body(datatype, depth, value)
    with pytest.raises(InvalidInputError, match=TRITON_NESTING):
        decode_infer_request(body, None, "m", None)


def test_regular_data_deeper_than_numpy_ranks_keeps_its_values() -> None:
    """70 levels: more than numpy's 64 dims, below Triton's 100."""
    data: object = [[1, 2], [3, 4]]
    for _ in range(68):
        data = [data]
    item = {"name": "x", "datatype": "INT32", "shape": [4], "data": data}
    np.testing.assert_array_equal(_decode_json({"inputs": [item]})["x"], [1, 2, 3, 4])


@pytest.mark.parametrize("nested", [False, True])
def test_whitespace_runs_longer_than_a_piece_are_read_in_one_pass(nested: bool) -> None:
    """A run of whitespace beyond a piece (256 KiB) is searched for its next comma once, in
    C, not copied again for every further piece (that was quadratic in the run)."""
    gap = " " * (3 * 1024 * 1024)
    rows = [f"[1.5,{gap}2.5]", "[3.5, 4.5]"] if nested else ["1.5", f"{gap}2.5", "3.5", "4.5"]
    data = "[" + gap + ",".join(rows) + gap + "]"
    body = f'{{"inputs":[{{"name":"x","datatype":"FP32","shape":[2,2],"data":{data}}}]}}'
    request, _ = decode_infer_request(body.encode(), None, "m", None)
    np.testing.assert_array_equal(request.inputs["x"], [[1.5, 2.5], [3.5, 4.5]])


def test_empty_and_unit_rows_keep_their_counts() -> None:
    for data, shape in (([[], []], [2, 0]), ([[1], [2]], [2, 1]), ([], [0]), ([[[]]], [1, 1, 0])):
        item = {"name": "x", "datatype": "INT32", "shape": shape, "data": data}
        assert _decode_json({"inputs": [item]})["x"].shape == tuple(shape)


def test_a_shape_the_text_cannot_fill_is_refused_before_allocating() -> None:
    item = {"name": "x", "datatype": "FP64", "shape": [2**30, 1024], "data": [1, 2]}
    with pytest.raises(InvalidInputError, match="cannot hold the"):
        _decode_json({"inputs": [item]})


def _cnn_body(digits: int | None) -> bytes:
    values = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    flat = values.reshape(-1).astype(np.float64)
    data = (np.round(flat, digits) if digits is not None else flat).tolist()
    item = {"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": data}
    return json.dumps({"inputs": [item]}).encode()


@pytest.mark.parametrize("digits", [3, None], ids=["85KB-short-numbers", "250KB-full-precision"])
def test_decoding_a_json_tensor_peaks_below_twice_its_body(digits: int | None) -> None:
    body = _cnn_body(digits)
    decode_infer_request(body, None, "m", None)  # warm caches (decoders, numpy) first
    tracemalloc.start()
    try:
        request, _ = decode_infer_request(body, None, "m", None)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert request.inputs["input"].shape == (1, 3, 64, 64)
    assert peak_bytes <= 2 * len(body), (peak_bytes, len(body))


# --- outputs as Triton answers them ------------------------------------------------------


def _encoding(header: dict[str, object]) -> tuple[list[str] | None, object]:
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], **header}
    request, encoding = decode_infer_request(json.dumps(header).encode(), None, "m", None)
    return request.requested_outputs, encoding


def test_binary_data_output_applies_only_when_no_output_is_listed() -> None:
    requested, encoding = _encoding({"parameters": {"binary_data_output": True}})
    assert requested is None and encoding.is_binary("y")  # type: ignore[attr-defined]
    listed = {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "y"}, {"name": "z", "parameters": {"binary_data": True}}],
    }
    requested, encoding = _encoding(listed)
    assert requested == ["y", "z"]
    assert not encoding.is_binary("y") and encoding.is_binary("z")  # type: ignore[attr-defined]


def test_an_output_requested_twice_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="output 'y' already exists in request"):
        _encoding({"outputs": [{"name": "y"}, {"name": "y"}]})


def test_nan_outputs_are_written_as_json_literals() -> None:
    response = InferResponse("m", "1", {"y": np.array([np.nan, 1.0], dtype=np.float32)})
    body, _ = _encode(response, False, {})
    assert b"NaN" in body and json.loads(body)["outputs"][0]["data"][1] == 1.0


# --- raw binary mode -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "dims", "batching", "data", "shape"),
    [
        ("FP32", (4,), True, b"\x00" * 16, [1, 4]),
        ("FP32", (-1,), True, b"\x00" * 24, [1, 6]),
        ("INT16", (2, -1), False, b"\x00" * 12, [2, 3]),
        ("BYTES", (-1,), False, b"\x01\x00\x00\x00a\x00\x00\x00\x00", [2]),
    ],
)
def test_raw_binary_shape_comes_from_the_byte_count(
    datatype: str, dims: tuple[int, ...], batching: bool, data: bytes, shape: list[int]
) -> None:
    assert raw_input_shape(datatype, dims, batching, data, "x") == shape


@pytest.mark.parametrize(
    ("dims", "data", "message"),
    [
        ((-1, -1), b"\x00" * 16, "more than one variable-sized dimension"),
        ((3, -1), b"\x00" * 16, "do not fill shape"),
        ((-1,), b"\x00" * 6, "not a whole number of FP32 values"),
        ((0, -1), b"\x00" * 4, "do not fill shape"),
    ],
)
def test_raw_binary_bytes_that_cannot_fill_the_shape_are_refused(
    dims: tuple[int, ...], data: bytes, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        raw_input_shape("FP32", dims, False, data, "x")
