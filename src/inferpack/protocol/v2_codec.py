"""KServe v2 REST bodies: JSON tensors and the binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensor bytes. The header's
length comes from the ``Inference-Header-Content-Length`` HTTP header; each binary input
says its size in ``parameters.binary_data_size`` and the bytes follow in input order.
Outputs are binary when asked per output (``parameters.binary_data``) or for all
(request ``parameters.binary_data_output``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from inferpack.datatypes import DATATYPES, datatype_of, tensor_from_bytes, tensor_to_bytes
from inferpack.errors import InvalidInputError
from inferpack.protocol.tensors_json import json_to_tensor, tensor_to_json
from inferpack.types import InferRequest, InferResponse, Tensor

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(slots=True)
class OutputEncoding:
    """Which outputs go back as binary."""

    binary_by_default: bool = False
    binary: dict[str, bool] = field(default_factory=dict)

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_by_default)


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where} must be a JSON object")
    return value


def _shape(item: dict[str, Any], name: str) -> tuple[int, ...]:
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInputError(f"input {name!r}: shape must be a list of non-negative integers")
    return tuple(shape)


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


def _decode_input(item: Any, index: int, binary: _BinaryReader) -> tuple[str, Tensor]:
    if not isinstance(item, dict):
        raise InvalidInputError(f"inputs[{index}] must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"inputs[{index}]: 'name' must be a non-empty string")
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidInputError(f"input {name!r}: unknown datatype {datatype!r}")
    shape = _shape(item, name)
    parameters = _object(item.get("parameters"), f"input {name!r} parameters")
    if "binary_data_size" in parameters:
        raw = binary.take(parameters["binary_data_size"], name)
        return name, tensor_from_bytes(raw, datatype, shape, name)
    if "data" not in item:
        raise InvalidInputError(f"input {name!r} has neither 'data' nor binary_data_size")
    return name, json_to_tensor(item["data"], datatype, shape, name)


def _parse_header(raw: bytes | memoryview) -> dict[str, Any]:
    try:
        header = json.loads(bytes(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"malformed JSON in request body: {error}") from None
    if not isinstance(header, dict):
        raise InvalidInputError("request body must be a JSON object")
    return header


def _output_encoding(header: dict[str, Any]) -> tuple[list[str] | None, OutputEncoding]:
    parameters = _object(header.get("parameters"), "request parameters")
    encoding = OutputEncoding(binary_by_default=bool(parameters.get("binary_data_output", False)))
    outputs = header.get("outputs")
    if outputs is None:
        return None, encoding
    if not isinstance(outputs, list):
        raise InvalidInputError("'outputs' must be a list of {name, parameters}")
    names = []
    for index, item in enumerate(outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInputError(f"outputs[{index}] must be an object with a 'name'")
        params = _object(item.get("parameters"), f"output {item['name']!r} parameters")
        if "binary_data" in params:
            encoding.binary[item["name"]] = bool(params["binary_data"])
        names.append(item["name"])
    return names, encoding


def decode_infer_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str | None
) -> tuple[InferRequest, OutputEncoding]:
    """Parse a v2 infer body (JSON, or JSON header + binary tensors)."""
    view = memoryview(body)
    if header_length is None:
        header_length = len(body)
    elif header_length > len(body):
        raise InvalidInputError(
            f"{HEADER_LENGTH} {header_length} is larger than the body ({len(body)} bytes)"
        )
    header = _parse_header(view[:header_length])
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError("'inputs' must be a non-empty list")
    binary = _BinaryReader(view[header_length:])
    tensors: dict[str, Tensor] = {}
    for index, item in enumerate(inputs):
        name, tensor = _decode_input(item, index, binary)
        if name in tensors:
            raise InvalidInputError(f"input {name!r} appears more than once")
        tensors[name] = tensor
    unclaimed = len(binary.data) - binary.offset
    if unclaimed:
        raise InvalidInputError(f"{unclaimed} bytes of binary data are not claimed by any input")
    request_id = header.get("id")
    requested, encoding = _output_encoding(header)
    parameters = _object(header.get("parameters"), "request parameters")
    request = InferRequest(
        model_name=model_name,
        inputs=tensors,
        model_version=model_version,
        id=str(request_id) if request_id is not None else None,
        requested_outputs=requested,
        parameters=parameters,
    )
    return request, encoding


def encode_infer_response(
    response: InferResponse, encoding: OutputEncoding
) -> tuple[bytes, int | None]:
    """Body bytes and, when any output is binary, the JSON header length."""
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
            entry["data"] = tensor_to_json(array)
        outputs.append(entry)
    header: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id is not None:
        header["id"] = response.id
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return header_bytes, None
    return header_bytes + b"".join(chunks), len(header_bytes)
