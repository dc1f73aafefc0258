"""Check a request against the model's declared inputs and outputs before it is queued."""

from __future__ import annotations

from collections.abc import Hashable

from inferpack.config.model_config import ModelConfig
from inferpack.config.tensor_spec import TensorSpec
from inferpack.datatypes import datatype_of
from inferpack.errors import InvalidInputError
from inferpack.types import InferRequest, Tensor


def _names(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(repr(spec.name) for spec in specs)


def _check_shape(config: ModelConfig, spec: TensorSpec, array: Tensor) -> None:
    shape = array.shape
    dims = shape[1:] if config.batching else shape
    expected = ["-1" if config.batching else None, *map(str, spec.dims)]
    shown = "[" + ", ".join(e for e in expected if e is not None) + "]"
    if len(dims) != len(spec.dims) or (config.batching and len(shape) == 0):
        raise InvalidInputError(
            f"input {spec.name!r}: shape {list(shape)} does not match model shape {shown}"
        )
    for got, want in zip(dims, spec.dims, strict=True):
        if want not in (-1, got):
            raise InvalidInputError(
                f"input {spec.name!r}: shape {list(shape)} does not match model shape {shown}"
            )
    if config.batching and not 1 <= shape[0] <= config.max_batch_size:
        raise InvalidInputError(
            f"input {spec.name!r}: batch size {shape[0]} is outside 1..{config.max_batch_size} "
            "(max_batch_size)"
        )


def validate_request(
    config: ModelConfig, request: InferRequest, inputs: dict[str, Tensor] | None = None
) -> tuple[int, Hashable]:
    """Return (rows, batch key) of a valid request; raise InvalidInputError naming the problem.

    ``inputs``: the model tensors made from the request's uploads, if any (default: the
    request's own inputs). Requests may share a batch only when their non-batch dims agree:
    the key says which.
    """
    request_inputs = request.inputs if inputs is None else inputs
    missing = [spec.name for spec in config.inputs if spec.name not in request_inputs]
    if missing:
        raise InvalidInputError(
            f"model {config.name!r}: missing input(s) {missing}; expects {_names(config.inputs)}"
        )
    extra = sorted(set(request_inputs) - {spec.name for spec in config.inputs})
    if extra:
        raise InvalidInputError(
            f"model {config.name!r} has no input(s) {extra}; expects {_names(config.inputs)}"
        )
    rows: set[int] = set()
    for spec in config.inputs:
        array = request_inputs[spec.name]
        datatype = datatype_of(array)
        if datatype != spec.datatype:
            raise InvalidInputError(
                f"input {spec.name!r}: datatype {datatype} does not match model datatype "
                f"{spec.datatype}"
            )
        _check_shape(config, spec, array)
        rows.add(array.shape[0] if config.batching else 1)
    if len(rows) > 1:
        raise InvalidInputError(f"inputs disagree on the batch size: {sorted(rows)}")
    served = config.served_outputs
    for name in [*(request.requested_outputs or ()), *request.classification]:
        if name not in {spec.name for spec in served}:
            raise InvalidInputError(
                f"model {config.name!r} has no output {name!r}; outputs: {_names(served)}"
            )
    variable = any(-1 in spec.dims for spec in config.inputs)
    key = tuple(request_inputs[s.name].shape[1:] for s in config.inputs) if variable else None
    return rows.pop(), key
