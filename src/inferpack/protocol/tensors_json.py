"""JSON tensor data <-> numpy, with the checks a client needs to fix its request."""

from __future__ import annotations

from typing import Any

import numpy as np

from inferpack.datatypes import element_count, numpy_dtype
from inferpack.errors import InvalidInputError
from inferpack.types import Tensor

# numpy kinds of parsed JSON that each datatype accepts (floats accept ints, not the reverse).
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item))
    return flat


def _bytes_array(data: Any, name: str) -> Tensor:
    items = []
    for item in _flatten(data):
        if not isinstance(item, str):
            raise InvalidInputError(f"input {name!r}: BYTES data must be strings, got {item!r}")
        items.append(item.encode("utf-8"))
    result = np.empty(len(items), dtype=np.object_)
    result[:] = items
    return result


def nested_to_array(data: Any, datatype: str, name: str) -> Tensor:
    """Nested (or flat) JSON lists as an array of ``datatype``, in their own shape."""
    if datatype == "BYTES":
        return _bytes_array(data, name)
    dtype = numpy_dtype(datatype)
    try:
        parsed = np.asarray(data)
    except ValueError:
        raise InvalidInputError(
            f"input {name!r}: data is ragged (rows of unequal length)"
        ) from None
    if parsed.size and parsed.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        shown = {"U": "string", "O": "mixed or null", "f": "floating-point", "b": "boolean"}
        kind = shown.get(parsed.dtype.kind, parsed.dtype.kind)
        raise InvalidInputError(
            f"input {name!r}: data holds {kind} values, which do not fit datatype {datatype}"
        )
    if parsed.size and dtype.kind in "iu":
        info = np.iinfo(dtype)  # type: ignore[type-var]
        if parsed.min() < info.min or parsed.max() > info.max:
            raise InvalidInputError(f"input {name!r}: data is out of range for {datatype}")
    return parsed.astype(dtype, copy=False)


def json_to_tensor(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> Tensor:
    """Tensor from v2 JSON ``data`` (flat row-major, or nested) checked against ``shape``."""
    array = nested_to_array(data, datatype, name).reshape(-1)
    expected = element_count(shape)
    if array.size != expected:
        raise InvalidInputError(
            f"input {name!r}: {array.size} values do not match shape {list(shape)} "
            f"({expected} expected)"
        )
    return array.reshape(shape)


def tensor_to_json(array: Tensor) -> list[Any]:
    """Flat row-major list (v2 JSON); BYTES as UTF-8 strings."""
    flat = array.reshape(-1)
    if flat.dtype == np.object_:
        return [
            item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)
            for item in flat
        ]
    return list(flat.tolist())
