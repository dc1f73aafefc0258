"""KServe v2 tensor datatypes and their numpy counterparts, plus the BYTES wire encoding.

BYTES tensors travel as a sequence of elements, each a 4-byte little-endian length
followed by that many bytes (KServe v2 binary extension, what tritonclient sends).
Inside inferpack a BYTES tensor is a numpy object array of ``bytes``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from inferpack.errors import InvalidInputError

_NUMPY_BY_DATATYPE: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_DATATYPE_BY_NUMPY: Final[dict[np.dtype[np.generic], str]] = {
    v: k for k, v in _NUMPY_BY_DATATYPE.items()
}

DATATYPES: Final[frozenset[str]] = frozenset(_NUMPY_BY_DATATYPE)
_LENGTH_PREFIX = struct.Struct("<I")


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype that holds a v2 datatype (BYTES → object)."""
    try:
        return _NUMPY_BY_DATATYPE[datatype]
    except KeyError:
        known = ", ".join(sorted(DATATYPES))
        raise InvalidInputError(f"unknown datatype {datatype!r} (known: {known})") from None


def datatype_of(array: npt.NDArray[np.generic]) -> str:
    """The v2 datatype name for a numpy array (strings and bytes map to BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _DATATYPE_BY_NUMPY[array.dtype]
    except KeyError:
        raise InvalidInputError(f"numpy dtype {array.dtype} has no v2 datatype") from None


# numpy below 2.0 holds at most 32 dims; no model input has more.
MAX_RANK: Final = 32
# Far more elements than any body under the request limit can carry, yet small enough that
# numpy can describe the shape (sizes are int64 bytes) even for zero-size tensors.
MAX_ELEMENTS: Final = 2**40
_INT64_MAX: Final = 2**63 - 1


def element_count(shape: tuple[int, ...]) -> int:
    """Product of the dims (a Python int: it never overflows)."""
    count = 1
    for dim in shape:
        count *= dim
    return count


def checked_shape(dims: Any, name: str, datatype: str | None = None) -> tuple[int, ...]:
    """``dims`` as a shape numpy can hold, or InvalidInputError naming the problem.

    Accepts any sequence of non-negative ints (JSON lists, protobuf repeated fields) of at
    most MAX_RANK dims whose non-zero dims multiply to at most MAX_ELEMENTS. Too many
    elements are refused in Triton's words: a byte size (of ``datatype``) beyond int64 is a
    "byte size overflow", any other excess "causes total element count to exceed".
    """
    if isinstance(dims, str | bytes) or not isinstance(dims, Sequence):
        raise InvalidInputError(f"input {name!r}: shape must be a list of non-negative integers")
    shape = tuple(dims)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInputError(f"input {name!r}: shape must be a list of non-negative integers")
    if len(shape) > MAX_RANK:
        raise InvalidInputError(
            f"input {name!r}: shape has {len(shape)} dims, more than the {MAX_RANK} supported"
        )
    count = element_count(tuple(d for d in shape if d))
    if count > MAX_ELEMENTS:
        itemsize = numpy_dtype(datatype).itemsize if datatype and datatype != "BYTES" else 0
        if count <= _INT64_MAX < count * itemsize:
            raise InvalidInputError(
                f"byte size overflow for input {name!r}: shape {list(shape)} of {datatype} "
                f"has more than {MAX_ELEMENTS} elements"
            )
        raise InvalidInputError(
            f"input {name!r}: shape {list(shape)} causes total element count to exceed "
            f"maximum size of {MAX_ELEMENTS}"
        )
    return shape


def bytes_elements(array: npt.NDArray[np.generic]) -> npt.NDArray[np.object_]:
    """``array`` as inferpack holds BYTES: an object array of ``bytes`` of the same shape,
    each element encoded as Triton's python backend does (bytes as they are, ``str`` as
    UTF-8, anything else as its ``str``)."""
    flat = np.empty(array.size, dtype=np.object_)
    flat[:] = [_element_bytes(item) for item in array.reshape(-1)]
    return flat.reshape(array.shape)


def _element_bytes(item: Any) -> bytes:
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    return (item if isinstance(item, str) else str(item)).encode("utf-8")


def serialize_bytes_tensor(array: npt.NDArray[np.generic]) -> bytes:
    """Length-prefixed concatenation of the elements of a BYTES tensor, row-major."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)  # type: ignore[call-overload]
        parts.append(_LENGTH_PREFIX.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes_tensor(buffer: bytes | memoryview, name: str) -> npt.NDArray[np.object_]:
    """Inverse of :func:`serialize_bytes_tensor`; a flat object array of ``bytes``."""
    view = memoryview(buffer)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInputError(f"input {name!r}: BYTES element length prefix is truncated")
        (length,) = _LENGTH_PREFIX.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInputError(
                f"input {name!r}: BYTES element of {length} bytes overruns the tensor data"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    result = np.empty(len(items), dtype=np.object_)
    result[:] = items
    return result


def tensor_to_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """Raw little-endian row-major bytes of a tensor, as the binary extension carries it."""
    if array.dtype.kind in "OSU":
        return serialize_bytes_tensor(array)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def tensor_from_bytes(
    buffer: bytes | memoryview, datatype: str, shape: tuple[int, ...], name: str
) -> npt.NDArray[np.generic]:
    """Build a tensor from its raw bytes, checking the size matches the shape."""
    count = element_count(shape)
    if datatype == "BYTES":
        flat = deserialize_bytes_tensor(buffer, name)
        if flat.size != count:
            raise InvalidInputError(
                f"input {name!r}: {flat.size} BYTES elements do not match shape "
                f"{list(shape)} ({count} elements)"
            )
        return flat.reshape(shape)
    dtype = numpy_dtype(datatype).newbyteorder("<")
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInputError(
            f"input {name!r}: {len(buffer)} bytes of data do not match shape {list(shape)} "
            f"of {datatype} ({expected} bytes expected)"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)
