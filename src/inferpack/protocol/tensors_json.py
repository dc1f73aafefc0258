"""JSON tensor data held as Python objects (nested lists) <-> numpy, with the checks a
client needs to fix its request.

Request bodies of the v2 REST route read their numbers straight from the JSON text
(:mod:`inferpack.protocol.json_data`); this module serves what arrives as objects: the
TorchServe route, gRPC typed contents, BYTES, scalars and small tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferpack.datatypes import MAX_RANK, element_count, numpy_dtype
from inferpack.errors import InvalidInputError
from inferpack.types import Tensor

# numpy kinds of parsed JSON that each datatype accepts (floats accept ints, not the reverse).
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_KIND_WORDS = {"U": "string", "O": "mixed or null", "f": "floating-point", "b": "boolean"}


def kind_error(name: str, kind: str, datatype: str) -> InvalidInputError:
    """The error for data of a JSON kind (a numpy kind letter or a word) ``datatype`` refuses."""
    shown = _KIND_WORDS.get(kind, "integer" if kind in "iu" else kind)
    return InvalidInputError(
        f"input {name!r}: data holds {shown} values, which do not fit datatype {datatype}"
    )


def _flatten(data: Any, name: str) -> list[Any]:
    """Leaves of nested lists in row-major order; iterative, so depth cannot blow the stack."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= MAX_RANK:
                    raise InvalidInputError(f"input {name!r}: data nests deeper than {MAX_RANK}")
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _bytes_array(data: Any, name: str) -> Tensor:
    items = []
    for item in _flatten(data, name):
        if not isinstance(item, str):
            raise InvalidInputError(f"input {name!r}: BYTES data must be strings, got {item!r}")
        items.append(item.encode("utf-8", errors="surrogatepass"))
    result = np.empty(len(items), dtype=np.object_)
    result[:] = items
    return result


def _depth(data: Any) -> int:
    depth = 0
    while isinstance(data, list):
        depth += 1
        data = data[0] if data else None
    return depth


def nested_to_array(data: Any, datatype: str, name: str) -> Tensor:
    """Nested (or flat) JSON lists as an array of ``datatype``, in their own shape."""
    if datatype == "BYTES":
        return _bytes_array(data, name)
    dtype = numpy_dtype(datatype)
    if _depth(data) > MAX_RANK:
        raise InvalidInputError(f"input {name!r}: data nests deeper than {MAX_RANK}")
    try:
        parsed = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInputError(
            f"input {name!r}: data is ragged (rows of unequal length)"
        ) from None
    if parsed.size and parsed.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        raise kind_error(name, parsed.dtype.kind, datatype)
    if parsed.size and dtype.kind in "iu":
        info = np.iinfo(dtype)  # type: ignore[type-var]
        if parsed.min() < info.min or parsed.max() > info.max:
            raise InvalidInputError(f"input {name!r}: data is out of range for {datatype}")
    with np.errstate(over="ignore"):  # doubles beyond FP16/FP32 become inf, as a C cast does
        return parsed.astype(dtype, copy=False)


def json_to_tensor(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> Tensor:
    """Tensor from v2 JSON ``data`` (flat row-major, or nested) checked against ``shape``."""
    array = nested_to_array(data, datatype, name).reshape(-1)
    return fit_shape(array, shape, name)


def fit_shape(flat: Tensor, shape: tuple[int, ...], name: str) -> Tensor:
    """``flat`` reshaped to ``shape``, or InvalidInputError when the counts differ."""
    if flat.size != element_count(shape):
        raise count_error(flat.size, shape, name)
    return flat.reshape(shape)


def count_error(count: int, shape: tuple[int, ...], name: str) -> InvalidInputError:
    return InvalidInputError(
        f"input {name!r}: {count} values do not match shape {list(shape)} "
        f"({element_count(shape)} expected)"
    )


def tensor_to_json(array: Tensor) -> list[Any]:
    """Flat row-major list (v2 JSON); BYTES as UTF-8 strings."""
    flat = array.reshape(-1)
    if flat.dtype == np.object_:
        return [
            item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)
            for item in flat
        ]
    return list(flat.tolist())
