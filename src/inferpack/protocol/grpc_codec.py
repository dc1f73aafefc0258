"""KServe v2 gRPC messages <-> InferRequest / InferResponse.

Inputs come as ``raw_input_contents`` (one raw buffer per input, what tritonclient sends)
or as typed ``contents``; outputs always go back as ``raw_output_contents``, which every
v2 client reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferpack.datatypes import (
    DATATYPES,
    checked_shape,
    datatype_of,
    element_count,
    tensor_from_bytes,
    tensor_to_bytes,
)
from inferpack.errors import InvalidInputError
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.tensors_json import count_error, json_to_tensor
from inferpack.protocol.v2_codec import classification_count
from inferpack.types import InferRequest, InferResponse, Tensor

# Which typed-contents field carries each datatype (FP16 travels raw only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _parameter_value(parameter: Any) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def _typed_contents(tensor: Any, shape: tuple[int, ...]) -> Tensor:
    """A tensor from typed ``contents``; the count is checked before anything is built."""
    name, datatype = tensor.name, tensor.datatype
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInputError(f"input {name!r}: {datatype} must be sent in raw_input_contents")
    values = getattr(tensor.contents, field)
    if len(values) != element_count(shape):
        raise count_error(len(values), shape, name)
    if datatype == "BYTES":
        flat = np.empty(len(values), dtype=np.object_)
        flat[:] = list(values)
        return flat.reshape(shape)
    return json_to_tensor(list(values), datatype, shape, name)


def _requested_outputs(message: Any) -> list[str] | None:
    names = [output.name for output in message.outputs]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidInputError(f"output '{name}' already exists in request")
        seen.add(name)
    return names or None


def _classification(message: Any) -> dict[str, int]:
    """Outputs asked for as top-k (``parameters["classification"].int64_param``)."""
    wanted: dict[str, int] = {}
    for output in message.outputs:
        if "classification" in output.parameters:
            value = _parameter_value(output.parameters["classification"])
            wanted[output.name] = classification_count(value, output.name)
    return wanted


def decode_model_infer(message: Any) -> InferRequest:
    """The request a ModelInferRequest carries; InvalidInputError (only) when malformed."""
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} buffers for {len(message.inputs)} inputs"
        )
    tensors: dict[str, Tensor] = {}
    for index, tensor in enumerate(message.inputs):
        if tensor.datatype not in DATATYPES:
            raise InvalidInputError(f"input {tensor.name!r}: unknown datatype {tensor.datatype!r}")
        shape = checked_shape(list(tensor.shape), tensor.name, tensor.datatype)
        if raw:
            array = tensor_from_bytes(raw[index], tensor.datatype, shape, tensor.name)
        else:
            array = _typed_contents(tensor, shape)
        if tensor.name in tensors:
            raise InvalidInputError(f"input '{tensor.name}' already exists in request")
        tensors[tensor.name] = array
    if not tensors:
        raise InvalidInputError("the request has no inputs")
    return InferRequest(
        model_name=message.model_name,
        inputs=tensors,
        model_version=message.model_version or None,
        id=message.id or None,
        requested_outputs=_requested_outputs(message),
        parameters={k: _parameter_value(v) for k, v in message.parameters.items()},
        classification=_classification(message),
    )


def encode_model_infer(response: InferResponse) -> Any:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id or ""
    )
    for name, array in response.outputs.items():
        message.outputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
        message.raw_output_contents.append(tensor_to_bytes(array))
    return message
