"""A JSON infer body whose tensors are flat float data, read in one simdjson pass.

The general path (:mod:`inferpack.protocol.v2_codec`) has msgspec check the whole body and
keep each ``data`` as raw text, then parses that text again, in pieces
(:mod:`inferpack.protocol.json_data`): a 250 KB body of full-precision floats (small-cnn's
3x64x64 image as ``loadtest`` and ``tolist()`` write it) is read twice, 0.19 ms + 0.31 ms
on the 2-core VM. JSON is a request's largest cost on the event loop, so the common case
is read once here: simdjson parses the body into its tape, each input's data comes out of
the tape as one buffer of doubles (no Python object per value) and the few other fields
as plain values; the general path's header is built from them, so every field is
checked, with the same messages, by the code that checks it there.

Anything else is left to the general path, which names the problem: ``None`` for a body
that is not an object with a list of input objects, data that is not a flat array of
numbers (nested rows, booleans, strings, ``null``), a datatype that is not floating point,
an input with binary data parameters, NaN or Infinity literals (Python clients write them;
simdjson refuses them as JSON does), any simdjson error. A body below ``MIN_BODY_BYTES``
goes there too (msgspec alone is quicker than building simdjson's proxies), and one above
``MAX_BODY_BYTES``: simdjson's tape holds the whole document (~8 bytes a number, and the
parser keeps its capacity for its thread's next body), where the general path holds one
piece at a time; up to 1 MiB the tape costs about the body's size, once per thread.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from inferpack.protocol.json_data import simd_doubles

try:
    import simdjson
except ImportError:  # pragma: no cover - a dependency; the general path reads every body
    simdjson = None  # type: ignore[assignment]

FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})
# Below this, msgspec's one pass over the body is quicker than simdjson and its proxies.
MIN_BODY_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
# What simdjson raises for a document it refuses or a value it cannot give.
_SIMDJSON_ERRORS = (ValueError, TypeError, RuntimeError, KeyError, IndexError)
_PARSERS = threading.local()  # one parser per thread, reused (its tape stays allocated)


def _plain(value: Any) -> Any:
    """A simdjson value as Python objects (containers here are small: shapes, parameters)."""
    if isinstance(value, simdjson.Array):
        return value.as_list()
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    return value


def read_float_body(
    body: bytes | memoryview,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[int, np.ndarray]] | None:
    """``(inputs without data, the body's other fields, data by input index)`` of a body
    whose every input holds flat floating-point data; None for the general path."""
    if simdjson is None or not MIN_BODY_BYTES <= len(body) <= MAX_BODY_BYTES:
        return None
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = simdjson.Parser()
    try:  # not JSON simdjson reads: NaN literals, bad UTF-8, too deep (RuntimeError)...
        document = parser.parse(bytes(body) if isinstance(body, memoryview) else body)
    except _SIMDJSON_ERRORS:
        return None
    try:
        return _read(document)
    except _SIMDJSON_ERRORS:
        return None
    finally:
        del document  # the parser refuses to parse again while its proxies live


def _read(
    document: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[int, np.ndarray]] | None:
    if not isinstance(document, simdjson.Object):
        return None
    inputs = document.get("inputs")
    if not isinstance(inputs, simdjson.Array) or not len(inputs):
        return None
    items: list[dict[str, Any]] = []
    data: dict[int, np.ndarray] = {}
    for index, item in enumerate(inputs):
        if not isinstance(item, simdjson.Object) or item.get("datatype") not in FLOAT_DATATYPES:
            return None
        keys = list(item.keys())
        if len(set(keys)) != len(keys):  # a key twice: which one counts is the parser's
            return None
        fields = {key: _plain(item[key]) for key in keys if key != "data"}
        parameters = fields.get("parameters")
        if isinstance(parameters, dict) and "binary_data_size" in parameters:
            return None
        values = simd_doubles(item.get("data"))
        if values is None:
            return None
        items.append(fields)
        data[index] = values
    keys = list(document.keys())
    if len(set(keys)) != len(keys):
        return None
    rest = {key: _plain(document[key]) for key in keys if key != "inputs"}
    return items, rest, data
