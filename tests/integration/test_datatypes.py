"""Every numeric v2 datatype round-trips through a real server, JSON and binary."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import triton_to_np_dtype

from tests.conftest import IDENTITY_DATATYPES
from tests.helpers import ServerThread


def _sample(datatype: str, rng: np.random.Generator) -> np.ndarray:
    dtype = triton_to_np_dtype(datatype)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=(2, 5)).astype(bool)
    if datatype.startswith("FP"):
        return rng.standard_normal((2, 5)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=(2, 5), dtype=dtype, endpoint=True)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_identity_round_trips_every_datatype(server: ServerThread, binary: bool) -> None:
    client = httpclient.InferenceServerClient(server.address)
    rng = np.random.default_rng(3)
    inputs, expected = [], {}
    for letter, datatype in zip("abcdefghi", IDENTITY_DATATYPES, strict=True):
        data = _sample(datatype, rng)
        item = httpclient.InferInput(f"in_{letter}", list(data.shape), datatype)
        item.set_data_from_numpy(data, binary_data=binary)
        inputs.append(item)
        expected[f"out_{letter}"] = data
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in expected]

    result = client.infer("identity", inputs, outputs=outputs)

    for name, data in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == data.dtype, name
        np.testing.assert_array_equal(got, data)
