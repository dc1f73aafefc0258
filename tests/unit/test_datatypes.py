from __future__ import annotations

import numpy as np
import pytest

from inferpack.datatypes import (
    DATATYPES,
    datatype_of,
    numpy_dtype,
    serialize_bytes_tensor,
    tensor_from_bytes,
    tensor_to_bytes,
)
from inferpack.errors import InvalidInputError


@pytest.mark.parametrize("datatype", sorted(DATATYPES - {"BYTES"}))
def test_raw_bytes_round_trip(datatype: str) -> None:
    array = np.arange(6).astype(numpy_dtype(datatype)).reshape(2, 3)
    restored = tensor_from_bytes(tensor_to_bytes(array), datatype, (2, 3), "x")
    assert datatype_of(restored) == datatype
    np.testing.assert_array_equal(restored, array)


def test_bytes_tensor_uses_4_byte_little_endian_length_prefix() -> None:
    array = np.array([b"ab", b"", "é"], dtype=np.object_)
    raw = serialize_bytes_tensor(array)
    assert raw == b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9"
    restored = tensor_from_bytes(raw, "BYTES", (3,), "s")
    assert list(restored) == [b"ab", b"", "é".encode()]


def test_size_mismatch_names_input_and_sizes() -> None:
    with pytest.raises(InvalidInputError, match=r"input 'x': 8 bytes .* \(16 bytes expected\)"):
        tensor_from_bytes(b"\x00" * 8, "FP32", (2, 2), "x")


def test_truncated_bytes_element_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="overruns"):
        tensor_from_bytes(b"\x05\x00\x00\x00ab", "BYTES", (1,), "s")


def test_unknown_datatype_lists_known_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown datatype 'FP8'.*FP32"):
        numpy_dtype("FP8")
