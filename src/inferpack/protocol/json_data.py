"""Numeric tensor data read from its JSON text in chunks, with no list per tensor.

Parsing a whole ``data`` array into nested Python lists costs ~6x its text in memory and
most of the decode time. The v2 codec leaves each ``data`` value as raw text (msgspec has
already checked its syntax) and this module reads it:

    flat data (the common case): each piece, cut at a comma, is made a JSON array in place
    ("," -> "[" at its start, "," -> "]" at its end); float pieces are parsed by simdjson
    straight into a buffer of doubles and cast into the output array; anything simdjson
    refuses (and integer or boolean data) goes through one typed msgspec decode, which also
    names what is wrong;
    nested data: for each piece of ~CHUNK_BYTES, cut just after a comma:
        skeleton += piece without numbers, literals and whitespace   # "[", "]", ","
        values    = typed msgspec decode of "[" + piece without brackets + "]"
        out[n : n + len(values)] = values        # kind and range checked per piece
    dims = the regular nesting the skeleton spells (or: ragged)
    check the count of values against dims and the declared shape

Peak memory is the output array, the skeleton (one byte per value) and one piece's Python
numbers or simdjson tape (a piece is at most 1/8 of the text); never a Python object per
element of the tensor. Values are exactly what the
object path gives (msgspec parses doubles correctly rounded; numpy casts them).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

try:  # simdjson parses a piece of numbers straight into a buffer of doubles (no objects)
    import simdjson
except ImportError:  # pragma: no cover - a dependency; the msgspec path is exact alone
    simdjson = None  # type: ignore[assignment]

from inferpack.datatypes import element_count, numpy_dtype
from inferpack.errors import InvalidInputError
from inferpack.protocol.tensors_json import (
    MAX_DATA_DEPTH,
    count_error,
    kind_error,
    nesting_error,
)
from inferpack.types import Tensor

# A piece is 1/8 of the text, between 8 KiB and 256 KiB: its Python numbers (~5x its text)
# stay well below the text of the tensor, the per-piece overhead (~10 us) is paid at most
# ~8 times for a small body, and a huge body never holds more than ~1 MiB of objects.
PIECES_PER_TEXT = 8
MIN_PIECE_BYTES = 8 * 1024
MAX_PIECE_BYTES = 256 * 1024
_WHITESPACE = b" \t\r\n"
_NOT_VALUES = b"[]" + _WHITESPACE
# Everything a number or a literal (true, false, null) is spelled with, and whitespace.
_NOT_SKELETON = b"0123456789.eE+-truefalsn" + _WHITESPACE
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "b": msgspec.json.Decoder(list[bool]),
    "i": msgspec.json.Decoder(list[int]),
    "u": msgspec.json.Decoder(list[int]),
    "f": msgspec.json.Decoder(list[float]),
}
_GOT = {"bool": "b", "str": "U", "null": "O", "float": "f", "int": "i", "object": "O"}


_COMMA = re.compile(rb",")
_FIRST_ITEM = re.compile(rb"\[[ \t\r\n]*")  # an array's "[" and the whitespace after it


def _piece_size(text: memoryview) -> int:
    return min(MAX_PIECE_BYTES, max(MIN_PIECE_BYTES, len(text) // PIECES_PER_TEXT))


def _cut(text: memoryview, start: int, size: int, floor: int) -> int:
    """Where the piece from ``start`` ends: just after its last comma at or beyond
    ``start + floor`` within ``size`` bytes, else just after the next comma (a run of
    whitespace longer than a piece), else the end of the text. C-speed search, no copies."""
    stop = start + size
    if stop >= len(text):
        return len(text)
    window = bytes(text[start + floor : stop])
    last = window.rfind(b",")
    if last >= 0:
        return start + floor + last + 1
    found = _COMMA.search(text, stop)
    return found.end() if found else len(text)


def _pieces(text: memoryview) -> Iterator[bytearray]:
    """Consecutive pieces covering ``text``, each (but the last) ending in a comma."""
    size = _piece_size(text)
    start = 0
    while start < len(text):
        stop = _cut(text, start, size, 0)
        yield bytearray(text[start:stop])
        start = stop


def _flat_pieces(text: memoryview) -> Iterator[bytearray]:
    """A flat array cut into consecutive arrays: ``[a,b,c,d]`` -> ``[a,b]``, ``[c,d]``.

    Each piece is copied from just before its first value (the "[" or the comma that ends
    the previous piece, overwritten with "["), and ends where its last comma was, overwritten
    with "]": no bytes move, and a piece is a complete JSON array msgspec reads in one call.
    """
    size = _piece_size(text)
    start, end = 0, len(text)
    while start < end:
        stop = _cut(text, start, size, 1)
        piece = bytearray(text[start:stop])
        if stop < end:
            piece[-1] = ord("]")
        piece[0] = ord("[")
        yield piece
        if stop >= end:
            return
        start = stop - 1  # the next piece starts at this one's last comma


def _ragged(name: str) -> InvalidInputError:
    return InvalidInputError(f"input {name!r}: data is ragged (rows of unequal length)")


def _decode(array_text: bytes | bytearray, datatype: str, name: str) -> list[Any]:
    """The values of a flat JSON array of numbers or booleans, as ``datatype`` accepts them."""
    if b'"' in array_text:  # a string, or an object (keys are strings)
        raise kind_error(name, "O" if b"{" in array_text else "U", datatype)
    try:
        values: list[Any] = _DECODERS[numpy_dtype(datatype).kind].decode(array_text)
    except msgspec.ValidationError as error:
        if str(error).startswith("Number out of range"):
            raise InvalidInputError(f"input {name!r}: data holds a number out of range") from None
        got = str(error).partition("got `")[2].partition("`")[0]
        if got == "array":
            raise _ragged(name) from None
        raise kind_error(name, _GOT.get(got, got), datatype) from None
    except msgspec.DecodeError:  # unbalanced brackets or empty items: lists beside values
        raise _ragged(name) from None
    return values


def _nested_values(piece: bytearray, datatype: str, name: str) -> list[Any]:
    values = piece.translate(None, _NOT_VALUES)
    if values.endswith(b","):
        del values[-1]
    if not values.strip(b","):
        return []  # only empty lists here; the count decides whether that is consistent
    return _decode(b"[" + values + b"]", datatype, name)


def _integers(values: list[Any], datatype: str, name: str) -> Tensor:
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:  # beyond int64: fits only UINT64, and only when none is negative
        if min(values) >= 0:
            try:
                return np.array(values, dtype=np.uint64)
            except OverflowError:
                pass
    raise InvalidInputError(f"input {name!r}: data is out of range for {datatype}")


_PARSERS = threading.local()  # a simdjson parser is reused, one per thread


def _simd_floats(piece: bytearray) -> Tensor | None:
    """The doubles of a flat JSON array of numbers, parsed by simdjson into one buffer
    (about 8x faster than building Python floats); None when the piece holds anything else
    (a nested list, a boolean, a string, null, a number out of range), for the exact path
    to name the problem."""
    if simdjson is None or piece.count(b"[") != 1:  # simdjson would flatten nested lists
        return None
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = simdjson.Parser()
    try:
        document = parser.parse(piece)
    except (TypeError, ValueError):
        return None
    try:
        return simd_doubles(document)
    finally:
        del document  # the parser refuses to parse again while a document lives


def simd_doubles(array: Any) -> Tensor | None:
    """A parsed simdjson array of numbers as one buffer of doubles; None for anything else
    (not an array, a value that is not a number; as_buffer flattens nested arrays, so a
    count other than the array's own length means it was nested)."""
    if not isinstance(array, simdjson.Array):
        return None
    try:
        values = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if len(values) == len(array) else None


def _store(out: Tensor, at: int, values: list[Any] | Tensor, datatype: str, name: str) -> None:
    kind = out.dtype.kind
    if isinstance(values, np.ndarray):  # doubles from simdjson, cast as astype does
        array = values
    elif kind in "iu":
        array = _integers(values, datatype, name)
        info = np.iinfo(out.dtype)  # type: ignore[type-var]
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidInputError(f"input {name!r}: data is out of range for {datatype}")
    else:  # each Python float (a double) cast straight to the dtype, as astype does
        array = np.fromiter(values, out.dtype, len(values))
    out[at : at + len(values)] = array


@dataclass(slots=True)
class _Target:
    """Where the values go: the flat output array, and what to name in errors."""

    out: Tensor
    datatype: str
    name: str


def _take(piece: bytearray, target: _Target, at: int) -> int:
    """Store the values of ``piece`` at ``out[at:]`` (while they fit); return their count."""
    datatype, name = target.datatype, target.name
    values = _nested_values(piece, datatype, name)
    if at + len(values) <= target.out.size:
        _store(target.out, at, values, datatype, name)
    return len(values)


def _regular(skeleton: bytes, count: int) -> tuple[int, ...] | None:
    """The dims of a regular nesting whose skeleton is ``skeleton`` and which holds ``count``
    values, or None when no regular nesting has that skeleton (ragged or mixed data)."""
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    first_close = skeleton.find(b"]")
    if depth == 0 or first_close < depth or depth >= MAX_DATA_DEPTH:
        return None
    commas = first_close - depth  # the first innermost list holds only commas
    unit = skeleton[depth - 1 : first_close + 1]
    dims = [commas + 1]
    for level in range(depth - 2, -1, -1):
        end = skeleton.find(b"]" * (depth - level), level)
        children, rest = divmod(end + depth - level - level - 1, len(unit) + 1)
        if end < 0 or rest:
            return None
        dims.insert(0, children)
        unit = b"[" + b",".join([unit] * children) + b"]"
    if unit != skeleton:
        return None
    if commas == 0:  # "[]" spells both one value and none: the count tells which
        dims[-1] = 1 if count else 0
    return tuple(dims) if element_count(tuple(dims)) == count else None


def _is_nested(raw: memoryview) -> bool:
    """Whether the first item of the array ``raw`` is a list (skipping any whitespace)."""
    found = _FIRST_ITEM.match(raw)
    at = found.end() if found else 0
    return at < len(raw) and raw[at] == ord("[")


def _decode_flat(
    raw: memoryview, out: Tensor, datatype: str, shape: tuple[int, ...], name: str
) -> Tensor:
    """A flat array: each piece is one typed msgspec decode and one cast into ``out``."""
    count = 0
    with np.errstate(over="ignore"):  # doubles beyond FP16/FP32 become inf, as a C cast does
        for piece in _flat_pieces(raw):
            values: list[Any] | Tensor | None = None
            if out.dtype.kind == "f":
                values = _simd_floats(piece)
            if values is None:
                values = _decode(piece, datatype, name)
            del piece  # before the values are cast: one piece's text in memory at a time
            if count + len(values) <= out.size:
                _store(out, count, values, datatype, name)
            count += len(values)
            del values
    if count != out.size:
        raise count_error(count, shape, name)
    return out.reshape(shape)


def from_doubles(values: Tensor, datatype: str, shape: tuple[int, ...], name: str) -> Tensor:
    """A flat array of doubles (already parsed: ``json_simd``) as the tensor ``datatype`` and
    ``shape`` declare: the count checked, each value cast as the text path casts it."""
    expected = element_count(shape)
    if len(values) != expected:
        raise count_error(len(values), shape, name)
    out = np.empty(expected, dtype=numpy_dtype(datatype))
    with np.errstate(over="ignore"):  # doubles beyond FP16/FP32 become inf, as a C cast does
        _store(out, 0, values, datatype, name)
    return out.reshape(shape)


def decode_data(raw: memoryview, datatype: str, shape: tuple[int, ...], name: str) -> Tensor:
    """The tensor a JSON array ``raw`` (syntax already valid) holds, checked against ``shape``.

    Numeric datatypes only; flat or nested rows (nested rows must be regular; their nesting
    need not be the shape's, as in Triton). Raises InvalidInputError naming the problem:
    ragged rows, a kind or range the datatype refuses, a count that does not match
    ``shape``, nesting MAX_DATA_DEPTH deep (Triton's limit and message).
    """
    expected = element_count(shape)
    if expected > (len(raw) + 1) // 2:  # each value takes a character and a comma
        raise InvalidInputError(
            f"input {name!r}: {len(raw)} bytes of JSON data cannot hold the {expected} values "
            f"of shape {list(shape)}"
        )
    out = np.empty(expected, dtype=numpy_dtype(datatype))
    if not _is_nested(raw):
        return _decode_flat(raw, out, datatype, shape, name)
    target = _Target(out, datatype, name)
    count, skeleton = 0, []
    with np.errstate(over="ignore"):  # doubles beyond FP16/FP32 become inf, as a C cast does
        for piece in _pieces(raw):
            skeleton.append(piece.translate(None, _NOT_SKELETON))
            count += _take(piece, target, count)
            del piece  # before the next piece is read: one piece in memory at a time
    text = b"".join(skeleton)
    if len(text) - len(text.lstrip(b"[")) >= MAX_DATA_DEPTH:
        raise nesting_error(name)
    if _regular(text, count) is None:
        raise _ragged(name)
    if count != expected:
        raise count_error(count, shape, name)
    return out.reshape(shape)
