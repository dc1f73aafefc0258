"""TorchServe-style ``POST /predictions/{model}``: plain JSON in, plain JSON out.

Request: ``{"inputs": {"name": nested list, ...}}``, ``{"inputs": nested list}`` or a bare
nested list (single-input models). Rows may omit the batch dim (one sample). Response:
the nested list of the only output, or ``{"name": nested list, ...}`` for several.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from inferpack.config.model_config import ModelConfig
from inferpack.errors import InvalidInputError
from inferpack.protocol.tensors_json import NESTING_MESSAGE, json_text, nested_to_array
from inferpack.types import InferRequest, InferResponse, Tensor


def _named_inputs(payload: Any, config: ModelConfig) -> dict[str, Any]:
    if isinstance(payload, dict) and "inputs" in payload:
        payload = payload["inputs"]
    if isinstance(payload, dict):
        return payload
    if len(config.inputs) != 1:
        names = [spec.name for spec in config.inputs]
        raise InvalidInputError(
            f'model {config.name!r} has inputs {names}: send {{"inputs": {{name: data}}}}'
        )
    return {config.inputs[0].name: payload}


def decode_prediction(
    body: bytes, config: ModelConfig, version: str | None
) -> tuple[InferRequest, bool]:
    """The request and whether a batch dim of 1 was added (and must be removed again)."""
    payload = load_json(body)
    tensors: dict[str, Tensor] = {}
    added_batch = False
    for name, value in _named_inputs(payload, config).items():
        spec = config.input(name)
        datatype = spec.datatype if spec is not None else "FP32"
        array = nested_to_array(value, datatype, name)
        if spec is not None and config.batching and array.ndim == len(spec.dims):
            array = array[None, ...]
            added_batch = True
        tensors[name] = array
    return InferRequest(config.name, tensors, model_version=version), added_batch


def load_json(body: bytes) -> Any:
    """The JSON value of a request body; InvalidInputError (400) for anything malformed,
    however deep it nests. msgspec (~4x json's speed); json for what msgspec refuses and
    Python's json reads (NaN / Infinity, which Python clients write; 1e400)."""
    try:
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError:
            return json.loads(body)
    except (msgspec.DecodeError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"malformed JSON in request body: {error}") from None
    except RecursionError:
        raise InvalidInputError(f"request body: {NESTING_MESSAGE}") from None


def encode_prediction(response: InferResponse, added_batch: bool) -> bytes:
    """The only output's nested list, or ``{name: nested list}``; large outputs are written
    a piece at a time (:func:`inferpack.protocol.tensors_json.json_text`)."""
    outputs = {
        name: json_text(array[0] if added_batch else array, nested=True)
        for name, array in response.outputs.items()
    }
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    items = [msgspec.json.encode(name) + b":" + text for name, text in outputs.items()]
    return b"{" + b",".join(items) + b"}"
