"""Just enough of the protobuf wire format to route a gRPC request without parsing it.

Every per-model request of the v2 service names the model in field 1 (``model_name`` of
ModelInferRequest, ``name`` of ModelReady/Metadata/Config/StatisticsRequest), a string.
Reading that one field walks the message's top-level tags and jumps over the other fields'
bytes, so routing a 600 KB ModelInferRequest costs a few tags instead of a full parse and
a copy of its tensors (measured in docs/deploy-local.md).
"""

from __future__ import annotations

from inferpack.errors import InvalidInputError

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint starting at ``at`` and the offset after it."""
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise InvalidInputError("malformed protobuf message: truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _skip(data: bytes, at: int, wire_type: int) -> int:
    if wire_type == _VARINT:
        return _varint(data, at)[1]
    if wire_type == _I64:
        return at + 8
    if wire_type == _I32:
        return at + 4
    if wire_type == _LEN:
        length, at = _varint(data, at)
        return at + length
    raise InvalidInputError(f"malformed protobuf message: wire type {wire_type}")


def string_field(data: bytes, number: int = 1) -> str:
    """The string in top-level field ``number`` ("" when absent; the last one wins, as in
    protobuf)."""
    found = b""
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        wire_type = tag & 7
        if tag >> 3 == number and wire_type == _LEN:
            length, at = _varint(data, at)
            found = data[at : at + length]
            at += length
        else:
            at = _skip(data, at, wire_type)
    if at != len(data):
        raise InvalidInputError("malformed protobuf message: a field runs past its end")
    try:
        return found.decode()
    except UnicodeDecodeError:
        raise InvalidInputError("malformed protobuf message: name is not UTF-8") from None


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def wrap_message(body: bytes, number: int) -> bytes:
    """``body`` (a serialized message) as field ``number`` of an enclosing message: how a
    ModelInferResponse becomes a ModelStreamInferResponse without a parse."""
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(body)) + body
