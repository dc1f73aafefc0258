"""KServe v2 REST bodies: JSON tensors and the binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensor bytes. The header's
length comes from the ``Inference-Header-Content-Length`` HTTP header; each binary input
says its size in ``parameters.binary_data_size`` and the bytes follow in input order.

Outputs, as Triton answers them: with no ``outputs`` listed, every output comes back, binary
when the request parameter ``binary_data_output`` is true; with ``outputs`` listed, only
those come back, each binary when its own ``parameters.binary_data`` is true (the request
parameter does not apply). An output listed twice is refused, in Triton's words.

Every malformed body raises InvalidInputError naming the problem; nothing else escapes.
Numeric ``data`` is read from the JSON text without a Python object per element
(:mod:`inferpack.protocol.json_data`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from inferpack.datatypes import (
    DATATYPES,
    checked_shape,
    datatype_of,
    deserialize_bytes_tensor,
    element_count,
    numpy_dtype,
    tensor_from_bytes,
    tensor_to_bytes,
)
from inferpack.errors import InvalidInputError
from inferpack.protocol.json_data import decode_data, from_doubles
from inferpack.protocol.json_simd import read_float_body
from inferpack.protocol.tensors_json import (
    NESTING_MESSAGE,
    json_text,
    json_to_tensor,
    nesting_error,
)
from inferpack.types import InferRequest, InferResponse, Tensor

HEADER_LENGTH = "Inference-Header-Content-Length"
_ABSENT = object()


@dataclass(slots=True)
class OutputEncoding:
    """Which outputs go back as binary, and which as their top-k (``classification``)."""

    binary_by_default: bool = False
    binary: dict[str, bool] = field(default_factory=dict)
    classification: dict[str, int] = field(default_factory=dict)

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_by_default)


class _Input(msgspec.Struct):
    """One input as parsed: fields stay loose (checked below, with clear messages) except
    ``data``, kept as its raw JSON text (syntax checked, no objects made)."""

    name: Any = None
    datatype: Any = None
    shape: Any = None
    parameters: Any = None
    data: msgspec.Raw = msgspec.Raw()


class _Header(msgspec.Struct):
    inputs: list[_Input] | None = None
    outputs: Any = None
    parameters: Any = None
    id: Any = None
    # Parsed ``data`` of each input, by index, when the stdlib fallback read the header.
    parsed_data: dict[int, Any] = {}


_HEADER_DECODER = msgspec.json.Decoder(_Header)


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where} must be a JSON object")
    return value


class _BinaryReader:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: Any, name: str) -> memoryview:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInputError(f"input {name!r}: binary_data_size must be a non-negative int")
        left = len(self.data) - self.offset
        if size > left:
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size} exceeds the {left} bytes of binary "
                "data left in the body (truncated body?)"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def _json_data(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> Tensor:
    """A tensor from ``data``: raw JSON text (msgspec path), doubles simdjson already read
    (``json_simd``), or parsed objects (fallback)."""
    if isinstance(data, np.ndarray):
        return from_doubles(data, datatype, shape, name)
    if not isinstance(data, msgspec.Raw):
        return json_to_tensor(data, datatype, shape, name)
    view = memoryview(data)
    if datatype != "BYTES" and bytes(view[:1]) == b"[":
        return decode_data(view, datatype, shape, name)
    try:
        value = msgspec.json.decode(view)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"input {name!r}: malformed JSON data: {error}") from None
    except RecursionError:
        raise nesting_error(name) from None
    return json_to_tensor(value, datatype, shape, name)


def _decode_input(
    item: _Input, parsed: Any, index: int, binary: _BinaryReader
) -> tuple[str, Tensor]:
    name = item.name
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"inputs[{index}]: 'name' must be a non-empty string")
    datatype = item.datatype
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInputError(f"input {name!r}: unknown datatype {datatype!r}")
    shape = checked_shape(item.shape, name, datatype)
    parameters = _object(item.parameters, f"input {name!r} parameters")
    if "binary_data_size" in parameters:
        raw = binary.take(parameters["binary_data_size"], name)
        return name, tensor_from_bytes(raw, datatype, shape, name)
    data = item.data if parsed is _ABSENT else parsed
    if isinstance(data, msgspec.Raw) and not len(data):
        raise InvalidInputError(f"input {name!r} has neither 'data' nor binary_data_size")
    return name, _json_data(data, datatype, shape, name)


def _validation_message(error: msgspec.ValidationError) -> str:
    where = str(error).partition(" - at `")[2].rstrip("`")
    if not where:
        return "request body must be a JSON object"
    if where == "$.inputs":
        return "'inputs' must be a non-empty list"
    if where.startswith("$.inputs[") and where.endswith("]") and "." not in where[2:]:
        return f"{where[2:]} must be a JSON object"
    return f"malformed request body: {error}"


def _header_with_constants(raw: memoryview) -> _Header:
    """Fallback for NaN / Infinity literals, which Python clients write and msgspec refuses."""
    try:
        parsed = json.loads(bytes(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"malformed JSON in request body: {error}") from None
    except RecursionError:
        raise InvalidInputError(f"request body: {NESTING_MESSAGE}") from None
    if not isinstance(parsed, dict):
        raise InvalidInputError("request body must be a JSON object")
    inputs = parsed.get("inputs")
    if inputs is not None and not isinstance(inputs, list):
        raise InvalidInputError("'inputs' must be a non-empty list")
    items, data = [], {}
    for index, item in enumerate(inputs or []):
        if not isinstance(item, dict):
            raise InvalidInputError(f"inputs[{index}] must be a JSON object")
        fields = (item.get("name"), item.get("datatype"), item.get("shape"), item.get("parameters"))
        items.append(_Input(*fields))
        if "data" in item:
            data[index] = item["data"]
    return _Header(items, parsed.get("outputs"), parsed.get("parameters"), parsed.get("id"), data)


def _header_of(
    items: list[dict[str, Any]], rest: dict[str, Any], data: dict[int, np.ndarray]
) -> _Header:
    """The header ``json_simd`` read: the same fields the msgspec path keeps, the data
    already parsed (checked from here on by the same code)."""
    inputs = [
        _Input(item.get("name"), item.get("datatype"), item.get("shape"), item.get("parameters"))
        for item in items
    ]
    fields = (rest.get("outputs"), rest.get("parameters"), rest.get("id"))
    return _Header(inputs, *fields, dict(data))


def _parse_header(raw: memoryview) -> _Header:
    try:
        return _HEADER_DECODER.decode(raw)
    except msgspec.ValidationError as error:
        raise InvalidInputError(_validation_message(error)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        text = bytes(raw)
        if b"NaN" in text or b"Infinity" in text:
            return _header_with_constants(raw)
        raise InvalidInputError(f"malformed JSON in request body: {error}") from None
    except RecursionError:
        raise InvalidInputError(f"request body: {NESTING_MESSAGE}") from None


def _output_encoding(header: _Header) -> tuple[list[str] | None, OutputEncoding]:
    parameters = _object(header.parameters, "request parameters")
    outputs = header.outputs
    if outputs is None:
        return None, OutputEncoding(bool(parameters.get("binary_data_output", False)))
    if not isinstance(outputs, list):
        raise InvalidInputError("'outputs' must be a list of {name, parameters}")
    encoding = OutputEncoding(binary_by_default=False)
    names: list[str] = []
    for index, item in enumerate(outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInputError(f"outputs[{index}] must be an object with a 'name'")
        name = item["name"]
        if name in encoding.binary:
            raise InvalidInputError(f"output '{name}' already exists in request")
        params = _object(item.get("parameters"), f"output {name!r} parameters")
        encoding.binary[name] = bool(params.get("binary_data", False))
        if "classification" in params:
            encoding.classification[name] = classification_count(params["classification"], name)
        names.append(name)
    return names, encoding


def decode_infer_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str | None
) -> tuple[InferRequest, OutputEncoding]:
    """Parse a v2 infer body (JSON, or JSON header + binary tensors).

    Raises InvalidInputError (and nothing else) for any malformed body.
    """
    view = memoryview(body)
    if header_length is None:
        header_length = len(body)
    elif header_length > len(body):
        raise InvalidInputError(
            f"{HEADER_LENGTH} {header_length} is larger than the body ({len(body)} bytes)"
        )
    floats = read_float_body(body) if header_length == len(body) else None
    header = _header_of(*floats) if floats else _parse_header(view[:header_length])
    if not header.inputs:
        raise InvalidInputError("'inputs' must be a non-empty list")
    binary = _BinaryReader(view[header_length:])
    tensors: dict[str, Tensor] = {}
    for index, item in enumerate(header.inputs):
        parsed = header.parsed_data.get(index, _ABSENT)
        name, tensor = _decode_input(item, parsed, index, binary)
        if name in tensors:
            raise InvalidInputError(f"input '{name}' already exists in request")
        tensors[name] = tensor
    unclaimed = len(binary.data) - binary.offset
    if unclaimed:
        raise InvalidInputError(f"{unclaimed} bytes of binary data are not claimed by any input")
    requested, encoding = _output_encoding(header)
    request = InferRequest(
        model_name=model_name,
        inputs=tensors,
        model_version=model_version,
        id=str(header.id) if header.id is not None else None,
        requested_outputs=requested,
        parameters=_object(header.parameters, "request parameters"),
        classification=encoding.classification,
    )
    return request, encoding


def classification_count(value: object, name: str) -> int:
    """The k of an output's ``classification`` parameter (Triton's classification extension)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(
            f"output {name!r}: parameter 'classification' must be a positive integer, got {value!r}"
        )
    return value


def raw_input_shape(
    datatype: str, dims: tuple[int, ...], batching: bool, data: bytes | memoryview, name: str
) -> list[int]:
    """The shape of a raw binary request's only input (header length 0: the body is the data).

    Fixed dims are the model's (with a batch of 1 when it batches); one variable dim (-1)
    takes what the byte count (BYTES: the element count) leaves for it. Raises
    InvalidInputError when the data cannot fill the shape.
    """
    shape = [1, *dims] if batching else list(dims)
    variable = [i for i, d in enumerate(shape) if d < 0]
    if not variable:
        return shape
    if len(variable) > 1:  # Triton's words, then the dims
        raise InvalidInputError(
            f"The shape of the raw input {name!r} can not be deduced because there are more "
            f"than one variable-sized dimension (dims {list(dims)})"
        )
    fixed = element_count(tuple(d for d in shape if d >= 0))
    if datatype == "BYTES":
        total = deserialize_bytes_tensor(data, name).size
    else:
        itemsize = numpy_dtype(datatype).itemsize
        if len(data) % itemsize:
            raise InvalidInputError(
                f"input {name!r}: {len(data)} bytes are not a whole number of {datatype} values"
            )
        total = len(data) // itemsize
    if fixed == 0 or total % fixed:
        raise InvalidInputError(
            f"input {name!r}: {total} values do not fill shape {shape} (dims {list(dims)})"
        )
    shape[variable[0]] = total // fixed
    return shape


def encode_infer_response(
    response: InferResponse, encoding: OutputEncoding
) -> tuple[bytes, int | None]:
    """Body bytes and, when any output is binary, the JSON header length. JSON ``data`` is
    written a piece at a time (:func:`inferpack.protocol.tensors_json.json_text`)."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in response.outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        if encoding.is_binary(name):
            raw = tensor_to_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = msgspec.Raw(json_text(array))
        outputs.append(entry)
    header: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id is not None:
        header["id"] = response.id
    header_bytes = msgspec.json.encode(header)
    if not chunks:
        return header_bytes, None
    return header_bytes + b"".join(chunks), len(header_bytes)
