"""JSON tensor data held as Python objects (nested lists) <-> numpy, with the checks a
client needs to fix its request.

Request bodies of the v2 REST route read their numbers straight from the JSON text
(:mod:`inferpack.protocol.json_data`); this module serves what arrives as objects: the
TorchServe route, gRPC typed contents, BYTES, scalars and small tensors.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import numpy as np

from inferpack.datatypes import MAX_RANK, element_count, numpy_dtype
from inferpack.errors import InvalidInputError
from inferpack.types import Tensor

# Triton's limit on the nesting of a tensor's JSON ``data`` (HTTP_MAX_JSON_NESTING_DEPTH):
# a value inside 100 or more lists is refused, whatever the shape; shallower data is read in
# row-major order, its nesting need not match the shape (only the element count must).
MAX_DATA_DEPTH = 100
NESTING_MESSAGE = f"JSON nesting depth exceeds maximum allowed limit ({MAX_DATA_DEPTH})"
# numpy kinds of parsed JSON that each datatype accepts (floats accept ints, not the reverse).
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_KIND_WORDS = {"U": "string", "O": "mixed or null", "f": "floating-point", "b": "boolean"}


def kind_error(name: str, kind: str, datatype: str) -> InvalidInputError:
    """The error for data of a JSON kind (a numpy kind letter or a word) ``datatype`` refuses."""
    shown = _KIND_WORDS.get(kind, "integer" if kind in "iu" else kind)
    return InvalidInputError(
        f"input {name!r}: data holds {shown} values, which do not fit datatype {datatype}"
    )


def nesting_error(name: str) -> InvalidInputError:
    """Triton's refusal of data nested MAX_DATA_DEPTH deep or deeper."""
    return InvalidInputError(f"input {name!r}: {NESTING_MESSAGE}")


def _flatten(data: Any, name: str) -> list[Any]:
    """Leaves of nested lists in row-major order; iterative, so depth cannot blow the stack."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) + 1 >= MAX_DATA_DEPTH:
                    raise nesting_error(name)
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _regular_leaves(data: list[Any], name: str) -> list[Any]:
    """Leaves of a regular nesting deeper than numpy builds arrays for (row-major), or
    InvalidInputError: ragged, or MAX_DATA_DEPTH deep. Iterative, level by level."""
    level: list[Any] = [data]
    for _ in range(MAX_DATA_DEPTH):
        if not any(isinstance(item, list) for item in level):
            return level
        if not all(isinstance(item, list) for item in level):
            raise _ragged(name)
        width = len(level[0])
        if any(len(item) != width for item in level):
            raise _ragged(name)
        level = [leaf for item in level for leaf in item]
    raise nesting_error(name)


def _ragged(name: str) -> InvalidInputError:
    return InvalidInputError(f"input {name!r}: data is ragged (rows of unequal length)")


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
    """How deep the first value lies (bounded: MAX_DATA_DEPTH + 1 at most)."""
    depth = 0
    while isinstance(data, list) and depth <= MAX_DATA_DEPTH:
        depth += 1
        data = data[0] if data else None
    return depth


def nested_to_array(data: Any, datatype: str, name: str, *, flat: bool = False) -> Tensor:
    """Nested (or flat) JSON lists as an array of ``datatype``, in their own shape (or flat:
    then nesting deeper than an array's rank is read too, as Triton reads it)."""
    if datatype == "BYTES":
        return _bytes_array(data, name)
    dtype = numpy_dtype(datatype)
    depth = _depth(data)
    if depth >= MAX_DATA_DEPTH:
        raise nesting_error(name)
    if depth > MAX_RANK:
        if not flat:
            raise InvalidInputError(f"input {name!r}: data nests deeper than {MAX_RANK}")
        data = _regular_leaves(data, name)
    try:
        parsed = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise _ragged(name) from None
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
    array = nested_to_array(data, datatype, name, flat=True).reshape(-1)
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


def _text_items(flat: Tensor) -> list[Any]:
    """BYTES elements as text (UTF-8, invalid bytes replaced): JSON carries strings."""
    return [
        item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)
        for item in flat
    ]


def tensor_to_json(array: Tensor) -> list[Any]:
    """Flat row-major list (v2 JSON); BYTES as UTF-8 strings."""
    flat = array.reshape(-1)
    if flat.dtype == np.object_:
        return _text_items(flat)
    return list(flat.tolist())


# Values encoded per call of :func:`json_text`: ~5 ms of work, so a thread encoding a large
# tensor gives the GIL back (to the event loop) between pieces instead of holding it for the
# whole tensor (json.dumps of 10 MB of floats holds it ~0.8 s).
JSON_PIECE_VALUES = 64 * 1024


def _values_text(array: Tensor) -> bytes:
    """``array.tolist()`` as JSON: msgspec (fast), or json's NaN / Infinity literals when a
    float is not finite (msgspec would write null), BYTES as strings."""
    if array.dtype == np.object_:
        items: Any = np.array(_text_items(array.reshape(-1)), dtype=np.object_).reshape(array.shape)
        return msgspec.json.encode(items.tolist())
    values = array.tolist()
    if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        return json.dumps(values, separators=(",", ":")).encode()
    return msgspec.json.encode(values)


def _append_text(array: Tensor, parts: list[bytes]) -> None:
    if array.ndim == 0 or array.size <= JSON_PIECE_VALUES:
        parts.append(_values_text(array))
        return
    row = array[0].size  # values under one index of the first dim
    parts.append(b"[")
    if row > JSON_PIECE_VALUES:
        for index, sub in enumerate(array):
            if index:
                parts.append(b",")
            _append_text(sub, parts)
    else:
        step = JSON_PIECE_VALUES // max(row, 1)
        for start in range(0, len(array), step):
            if start:
                parts.append(b",")
            parts.append(_values_text(array[start : start + step])[1:-1])
    parts.append(b"]")


def json_text(array: Tensor, *, nested: bool = False) -> bytes:
    """The JSON text of ``array``: a flat row-major list (v2), or nested lists in its shape
    (``nested``, what ``tolist()`` gives); BYTES as UTF-8 strings, non-finite floats as
    NaN / Infinity. Written JSON_PIECE_VALUES values at a time (see that constant)."""
    parts: list[bytes] = []
    _append_text(array if nested else array.reshape(-1), parts)
    return b"".join(parts)
