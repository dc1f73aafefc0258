"""Property tests of the request decoders: whatever arrives, they return a valid request or
raise InvalidInputError (never another exception), and the JSON text reader agrees with
the object path (Python's json + numpy) on every tensor it accepts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferpack.datatypes import DATATYPES, element_count, numpy_dtype
from inferpack.errors import InvalidInputError
from inferpack.protocol import json_data, json_simd
from inferpack.protocol.grpc_codec import decode_model_infer
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.tensors_json import json_to_tensor
from inferpack.protocol.v2_codec import decode_infer_request
from inferpack.types import InferRequest

NUMERIC = sorted(DATATYPES - {"BYTES"})
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
# Small pieces put piece boundaries everywhere: inside rows, between brackets, at the ends.
PIECE_BYTES = st.sampled_from([1, 3, 16, 64, 8192])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=2), children, max_size=2)
    ),
    max_leaves=24,
)
shapes = st.lists(st.integers(0, 4), max_size=3)
wild_shapes = st.lists(
    st.integers(-2, 2**62) | st.sampled_from([0, 1, 2**40, 2**63 - 1]), max_size=40
)


def _outcome(decode: Callable[..., Any], *args: Any) -> Any:
    """``decode(*args)``, or None when it raised InvalidInputError (anything else fails)."""
    try:
        return decode(*args)
    except InvalidInputError:
        return None


def _request(body: bytes, header_length: int | None) -> InferRequest:
    return decode_infer_request(body, header_length, "m", None)[0]


def _dumps(value: Any, style: int) -> bytes:
    options: list[dict[str, Any]] = [
        {"separators": (",", ":")},
        {"separators": (", ", ": ")},
        {"indent": 1},
        {"separators": (" ,\t", ":")},
    ]
    return json.dumps(value, **options[style]).encode()


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _values(datatype: str, count: int) -> st.SearchStrategy[list[Any]]:
    dtype = numpy_dtype(datatype)
    if dtype.kind == "b":
        element: st.SearchStrategy[Any] = st.booleans()
    elif dtype.kind == "f":
        element = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
    else:
        info = np.iinfo(dtype)  # type: ignore[type-var]
        element = st.integers(int(info.min), int(info.max))
    return st.lists(element, min_size=count, max_size=count)


def _body(datatype: str, shape: list[int], data: Any, style: int) -> bytes:
    item = {"name": "x", "datatype": datatype, "shape": shape, "data": data}
    return _dumps({"inputs": [item]}, style)


# A valid tensor's datatype, shape, nesting and JSON spelling (its values drawn from data).
VALID_TENSORS = {
    "datatype": st.sampled_from(NUMERIC),
    "shape": shapes,
    "nested": st.booleans(),
    "style": st.integers(0, 3),
    "data": st.data(),
}


@FUZZ
@given(**VALID_TENSORS, piece=PIECE_BYTES)
def test_valid_json_tensors_read_exactly_as_python_json_reads_them(
    datatype: str, shape: list[int], nested: bool, style: int, piece: int, data: st.DataObject
) -> None:
    values = data.draw(_values(datatype, element_count(tuple(shape))))
    payload = _nest(values, shape) if nested else values
    body = _body(datatype, shape, payload, style)
    expected = json_to_tensor(json.loads(body)["inputs"][0]["data"], datatype, tuple(shape), "x")
    with mock.patch.multiple(json_data, MIN_PIECE_BYTES=piece, MAX_PIECE_BYTES=piece):
        request, _ = decode_infer_request(body, None, "m", None)
    got = request.inputs["x"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@FUZZ
@given(
    datatype=st.sampled_from(sorted(DATATYPES)),
    shape=shapes,
    value=json_values,
    style=st.integers(0, 3),
    piece=PIECE_BYTES,
)
def test_any_json_data_is_read_as_the_object_path_reads_it_or_refused(
    datatype: str, shape: list[int], value: Any, style: int, piece: int
) -> None:
    body = _body(datatype, shape, value, style)
    with mock.patch.multiple(json_data, MIN_PIECE_BYTES=piece, MAX_PIECE_BYTES=piece):
        request = _outcome(_request, body, None)
    reference = _outcome(json_to_tensor, value, datatype, tuple(shape), "x")
    if request is None:
        return  # the text reader may refuse more (e.g. booleans among numbers), never less
    assert reference is not None, (value, datatype, shape)
    got = request.inputs["x"]
    assert got.dtype == reference.dtype
    np.testing.assert_array_equal(got, reference)


header_items = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=3) | json_values,
        "datatype": st.sampled_from([*DATATYPES, "FP8", ""]) | json_values,
        "shape": wild_shapes | json_values,
        "data": json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-5, 2**64)}
        )
        | json_values,
    },
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(header_items, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=2)}), max_size=3)
        | json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": st.booleans()})
        | json_values,
        "id": json_values,
    },
)


def _check(request: InferRequest | None) -> None:
    if request is not None:
        assert request.inputs and all(isinstance(a, np.ndarray) for a in request.inputs.values())


@FUZZ
@given(
    header=headers, tail=st.binary(max_size=64), extra=st.integers(-3, 80), style=st.integers(0, 3)
)
def test_binary_extension_bodies_decode_or_are_invalid_input(
    header: dict[str, Any], tail: bytes, extra: int, style: int
) -> None:
    raw = _dumps(header, style)
    length = max(0, len(raw) + min(extra, 2 * len(tail)) if extra > 0 else len(raw) + extra)
    for header_length in (length, len(raw), None):
        body = raw + tail if header_length is not None else raw
        _check(_outcome(_request, body, header_length))


@FUZZ
@given(body=st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_arbitrary_bytes_decode_or_are_invalid_input(body: bytes) -> None:
    for header_length in (None, len(body) // 2, len(body) + 1):
        _check(_outcome(_request, body, header_length))


_TYPED_FIELDS: dict[str, st.SearchStrategy[list[Any]]] = {
    "bool_contents": st.lists(st.booleans(), max_size=6),
    "int_contents": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6),
    "int64_contents": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6),
    "uint_contents": st.lists(st.integers(0, 2**32 - 1), max_size=6),
    "uint64_contents": st.lists(st.integers(0, 2**64 - 1), max_size=6),
    "fp32_contents": st.lists(st.floats(width=32), max_size=6),
    "fp64_contents": st.lists(st.floats(), max_size=6),
    "bytes_contents": st.lists(st.binary(max_size=4), max_size=6),
}
grpc_tensors = st.fixed_dictionaries(
    {
        "name": st.text(max_size=2),
        "datatype": st.sampled_from([*DATATYPES, "FP8", ""]),
        "shape": st.lists(
            st.integers(-(2**63), 2**63 - 1) | st.integers(0, 4) | st.just(2**62), max_size=40
        ),
    },
    optional={"contents": st.fixed_dictionaries({}, optional=_TYPED_FIELDS)},
)


@FUZZ
@given(
    tensors=st.lists(grpc_tensors, max_size=3),
    raw=st.none() | st.lists(st.binary(max_size=48), max_size=4),
    outputs=st.lists(st.text(max_size=2), max_size=3),
)
def test_grpc_requests_decode_or_are_invalid_input(
    tensors: list[dict[str, Any]], raw: list[bytes] | None, outputs: list[str]
) -> None:
    message = pb.ModelInferRequest(model_name="m")
    for tensor in tensors:
        added = message.inputs.add(name=tensor["name"], datatype=tensor["datatype"])
        added.shape.extend(tensor["shape"])
        for field, values in tensor.get("contents", {}).items():
            getattr(added.contents, field).extend(values)
    message.raw_input_contents.extend(raw or [])
    for name in outputs:
        message.outputs.add(name=name)
    wire = pb.ModelInferRequest.FromString(message.SerializeToString())
    _check(_outcome(decode_model_infer, wire))


@pytest.mark.parametrize("count", [1, 3])
def test_a_huge_bytes_shape_over_grpc_is_invalid_input_without_allocating(count: int) -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="s", datatype="BYTES", shape=[2**62, 2**62][:count])
    tensor.contents.bytes_contents.extend([b"a"] * count)
    with pytest.raises(InvalidInputError, match=r"exceed maximum size|do not match"):
        decode_model_infer(message)


def test_an_output_requested_twice_over_grpc_is_invalid_input() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    message.outputs.add(name="y")
    message.outputs.add(name="y")
    with pytest.raises(InvalidInputError, match="output 'y' already exists in request"):
        decode_model_infer(message)


def _same_request(fast: InferRequest | None, general: InferRequest | None) -> None:
    """Both refused, or both the same request: tensors (dtype, shape, values), id, params."""
    assert (fast is None) == (general is None), (fast, general)
    if fast is None or general is None:
        return
    assert fast.inputs.keys() == general.inputs.keys()
    for name, tensor in fast.inputs.items():
        other = general.inputs[name]
        assert tensor.dtype == other.dtype and tensor.shape == other.shape
        np.testing.assert_array_equal(tensor, other)
    assert (fast.id, fast.parameters, fast.requested_outputs) == (
        general.id,
        general.parameters,
        general.requested_outputs,
    )


def _both_paths(body: bytes) -> tuple[InferRequest | None, InferRequest | None]:
    """The body decoded with the one-pass simdjson reader on for any size, then off."""
    with mock.patch.object(json_simd, "MIN_BODY_BYTES", 0):
        fast = _outcome(_request, body, None)
    with mock.patch.object(json_simd, "MIN_BODY_BYTES", 2**62):
        general = _outcome(_request, body, None)
    return fast, general


@FUZZ
@given(**VALID_TENSORS, extra=headers)
def test_one_pass_float_reader_gives_the_general_paths_request(
    datatype: str,
    shape: list[int],
    nested: bool,
    style: int,
    extra: dict[str, Any],
    data: st.DataObject,
) -> None:
    """Valid tensors of every datatype (floats read in one simdjson pass, the rest left to
    the general path), with any other top-level fields: the same request either way."""
    values = data.draw(_values(datatype, element_count(tuple(shape))))
    item = {"name": "x", "datatype": datatype, "shape": shape,
            "data": _nest(values, shape) if nested else values}  # fmt: skip
    body = _dumps({**extra, "inputs": [item]}, style)
    fast, general = _both_paths(body)
    assert general is not None or extra  # valid tensors: only the extra fields may refuse
    _same_request(fast, general)


@FUZZ
@given(header=headers, style=st.integers(0, 3))
def test_one_pass_float_reader_refuses_what_the_general_path_refuses(
    header: dict[str, Any], style: int
) -> None:
    """Any body (wild inputs, data, parameters, ids): both paths accept it as the same
    request, or both refuse it with InvalidInputError (never another exception)."""
    _same_request(*_both_paths(_dumps(header, style)))


@pytest.mark.parametrize(
    ("data", "datatype", "read_in_one_pass"),
    [
        ([0.5] * 6, "FP32", True),
        ([[0.5] * 3] * 2, "FP32", False),  # nested rows: the general path
        ([1] * 6, "INT32", False),  # not floating point
        ([0.5, True, 0.5, 0.5, 0.5, 0.5], "FP32", False),  # a boolean among numbers
    ],
)
def test_only_flat_float_data_is_read_in_one_pass(
    data: Any, datatype: str, read_in_one_pass: bool
) -> None:
    item = {"name": "x", "datatype": datatype, "shape": [2, 3], "data": data}
    body = json.dumps({"inputs": [item], "id": "r"}).encode() + b" " * json_simd.MIN_BODY_BYTES
    assert (json_simd.read_float_body(body) is not None) is read_in_one_pass
    assert json_simd.read_float_body(body[: json_simd.MIN_BODY_BYTES - 1]) is None  # too small
    with mock.patch.object(json_simd, "MAX_BODY_BYTES", len(body) - 1):
        assert json_simd.read_float_body(body) is None  # too large: read in pieces
    fast, general = _both_paths(body)
    _same_request(fast, general)
