"""The python platform's parts without a server: the triton_python_backend_utils surface,
the shared-memory tensor blocks, and how instances answer per request."""

from __future__ import annotations

import errno
import json
import os
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inferpack.backends.python import calls, shm
from inferpack.backends.python import triton_utils as pb
from inferpack.backends.python.instances import (
    ModelContext,
    PythonRequest,
    as_tensor,
    load_instance,
)
from inferpack.errors import ConfigError, InvalidInputError, ModelExecutionError, NotFoundError

CONFIG = {
    "name": "m",
    "max_batch_size": 8,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}],
}


def _run(instance: object, payloads: list[dict[str, np.ndarray]]) -> list[object]:
    requests = [PythonRequest(p) for p in payloads]
    return instance.run(requests)  # type: ignore[attr-defined,no-any-return]


def _instance(tmp_path: Path, source: str, config: dict[str, object] = CONFIG) -> object:
    path = tmp_path / "1" / "model.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    context = ModelContext("m", "1", path.parent, dict(config))
    return load_instance(path, context, None)


def test_type_names_and_numbers_are_tritons() -> None:
    assert pb.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb.triton_string_to_numpy("TYPE_STRING") is np.object_
    assert pb.triton_to_numpy_type(1) is bool and pb.triton_to_numpy_type(13) is np.object_
    for number in range(1, 14):
        assert pb.numpy_to_triton_type(pb.triton_to_numpy_type(number)) == number
    assert pb.numpy_to_triton_type(np.dtype("U3")) == 13


def test_config_lookups_and_bytes_helpers() -> None:
    assert pb.get_output_config_by_name(CONFIG, "y") == CONFIG["output"][0]  # type: ignore[index]
    assert pb.get_input_config_by_name(CONFIG, "nope") is None
    assert not pb.using_decoupled_model_transaction_policy(CONFIG)
    words = np.array([b"a", b"", "\u017c".encode()], dtype=np.object_)
    encoded = pb.serialize_byte_tensor(words)
    assert encoded is not None
    assert pb.deserialize_bytes_tensor(encoded.tobytes()).tolist() == words.tolist()


def test_tensors_responses_and_errors() -> None:
    tensor = pb.Tensor("s", np.array(["ab", "c"]))
    assert tensor.as_numpy().dtype == np.object_ and tensor.as_numpy().tolist() == [b"ab", b"c"]
    assert tensor.name() == "s" and tensor.is_cpu()
    back = pb.Tensor.from_dlpack("f", np.arange(3, dtype=np.float32))
    assert back.as_numpy().tolist() == [0, 1, 2]
    failed = pb.InferenceResponse(error=pb.TritonError("nope", pb.TritonError.NOT_FOUND))
    assert failed.has_error() and failed.error().code() == 2  # type: ignore[union-attr]
    assert pb.TritonError("x").code() == pb.TritonError.INTERNAL
    request = pb.InferenceRequest(model_name=b"add_sub", inputs=[tensor])
    assert request.model_name == "add_sub"
    assert pb.get_input_tensor_by_name(request, "s") is tensor


def test_auto_complete_config_object() -> None:
    config = pb.ModelConfig(json.dumps({"name": "m"}))
    config.add_input({"name": "a", "data_type": "TYPE_FP32", "dims": [4]})
    config.set_max_batch_size(4)
    config.set_dynamic_batching()
    assert config.as_dict()["input"][0]["name"] == "a"
    assert config.as_dict()["max_batch_size"] == 4 and "dynamic_batching" in config.as_dict()
    config.add_input({"name": "a", "data_type": "TYPE_FP32", "dims": [4]})  # as listed: kept
    assert len(config.as_dict()["input"]) == 1
    with pytest.raises(ValueError, match="is in the config as"):
        config.add_input({"name": "a", "data_type": "TYPE_INT64", "dims": [4]})


def test_a_bls_call_outside_model_code_answers_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calls, "_servers", weakref.WeakSet())  # no server in this process
    response = pb.InferenceRequest(model_name="x").exec()
    assert response.has_error()
    assert "no server to call" in response.error().message()  # type: ignore[union-attr]


def _object_array(items: list[bytes]) -> np.ndarray:
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array


ARRAYS = st.one_of(
    hnp.arrays(
        st.sampled_from([np.float32, np.float16, np.int64, np.uint8, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    ),
    st.lists(st.binary(max_size=8), max_size=6).map(_object_array),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("abc"), ARRAYS, max_size=3), max_size=4))
def test_blocks_carry_any_batch_exactly(batches: list[dict[str, np.ndarray]]) -> None:
    block = shm.Block.create(shm.MIN_BLOCK_BYTES)
    try:
        layout = shm.write(block, shm.pack(batches))
        assert layout is not None
        back = shm.read(block, layout, copy=True)
    finally:
        block.close()
    assert not block.path.exists()
    for sent, got in zip(batches, back, strict=True):
        assert list(sent) == list(got)
        for name, array in sent.items():
            assert got[name].shape == array.shape
            np.testing.assert_array_equal(got[name], array)


def test_a_batch_too_big_for_a_block_is_not_written() -> None:
    block = shm.Block.create(shm.MIN_BLOCK_BYTES)
    try:
        fits = shm.pack([{"x": np.zeros(shm.MIN_BLOCK_BYTES, dtype=np.uint8)}])
        assert shm.write(block, fits) is not None
        too_big = shm.pack([{"x": np.zeros(shm.MIN_BLOCK_BYTES + 1, dtype=np.uint8)}])
        assert shm.write(block, too_big) is None
    finally:
        block.close()


NATIVE = """\
    import numpy as np
    from inferpack.errors import InvalidInputError

    class InferpackModel:
        def __init__(self, context):
            self.calls = 0

        def preprocess(self, inputs):
            if (inputs["x"] > 100).any():
                raise InvalidInputError("too big")
            return inputs

        def execute(self, inputs):
            self.calls += 1
            if (inputs["x"] < 0).any():
                raise ValueError("negative")
            return {"y": inputs["x"] * 2}
    """


def test_native_batch_runs_once_and_a_bad_request_fails_alone(tmp_path: Path) -> None:
    instance = _instance(tmp_path, NATIVE)
    ok = [{"x": np.array([[1.0]], np.float32)}, {"x": np.array([[2.0], [3.0]], np.float32)}]
    results = _run(instance, ok)  # type: ignore[attr-defined]
    assert [r["y"].tolist() for r in results] == [[[2.0]], [[4.0], [6.0]]]
    assert instance.model.calls == 1  # type: ignore[attr-defined]
    mixed = [ok[0], {"x": np.array([[-1.0]], np.float32)}, {"x": np.array([[101.0]], np.float32)}]
    first, negative, too_big = _run(instance, mixed)  # type: ignore[attr-defined]
    assert first["y"].tolist() == [[2.0]]
    assert isinstance(negative, ModelExecutionError)
    assert "ValueError: negative (model.py line 16, in execute)" in str(negative)
    assert isinstance(too_big, InvalidInputError) and str(too_big) == "too big"


TRITON = """\
    import asyncio
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        async def execute(self, requests):
            await asyncio.sleep(0)
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
                if (x < 0).any():
                    error = pb_utils.TritonError("negative", pb_utils.TritonError.INVALID_ARG)
                    responses.append(pb_utils.InferenceResponse(error=error))
                elif (x == 0).any():
                    error = pb_utils.TritonError("zero", pb_utils.TritonError.NOT_FOUND)
                    responses.append(pb_utils.InferenceResponse(error=error))
                else:
                    responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x + 1)]))
            return responses if len(requests) < 3 else responses[:1]
    """


def test_triton_async_execute_and_response_errors(tmp_path: Path) -> None:
    instance = _instance(tmp_path, TRITON)
    one, negative, zero = [{"x": np.array([[v]], np.float32)} for v in (1.0, -1.0, 0.0)]
    good, bad = _run(instance, [one, negative])  # type: ignore[attr-defined]
    assert good["y"].tolist() == [[2.0]]
    assert isinstance(bad, InvalidInputError) and str(bad) == "negative"
    assert isinstance(_run(instance, [zero])[0], NotFoundError)  # type: ignore[attr-defined]
    wrong = _run(instance, [one, one, one])  # type: ignore[attr-defined]
    instance.close()  # type: ignore[attr-defined]
    assert all(isinstance(r, ModelExecutionError) for r in wrong)
    assert "execute returned 1 responses for 3 requests" in str(wrong[0])


def test_undeclared_outputs_and_missing_classes_are_named(tmp_path: Path) -> None:
    source = """\
        class InferpackModel:
            def __init__(self, context):
                pass

            def execute(self, inputs):
                return {"z": inputs["x"]}
        """
    (result,) = _run(_instance(tmp_path / "a", source), [{"x": np.ones((1, 1))}])
    assert "returned output(s) ['z'] the config does not declare" in str(result)
    with pytest.raises(ConfigError, match="defines neither class InferpackModel nor"):
        _instance(tmp_path / "b", "x = 1\n")
    with pytest.raises(ConfigError, match=r"SyntaxError.*model.py line 1"):
        _instance(tmp_path / "c", "def (:\n")


HELPER_USER = """\
    import helpers

    class InferpackModel:
        def __init__(self, context):
            pass

        def execute(self, inputs):
            return {"y": inputs["x"] * 0 + helpers.VALUE}
    """


def test_each_model_imports_its_own_helpers(tmp_path: Path) -> None:
    """Two models each with a helpers.py beside model.py: neither gets the other's from the
    module cache, and nothing of theirs is left in sys.modules."""
    answers = []
    for value in (1.0, 2.0):
        folder = tmp_path / f"m{value:.0f}"
        (folder / "1").mkdir(parents=True)
        (folder / "1" / "helpers.py").write_text(f"VALUE = {value}\n")
        instance = _instance(folder, HELPER_USER)
        answers.append(_run(instance, [{"x": np.zeros((1, 1), np.float32)}])[0]["y"].item())  # type: ignore[attr-defined]
    assert answers == [1.0, 2.0]
    assert "helpers" not in sys.modules


def test_bytes_outputs_are_encoded_as_triton_does() -> None:
    out = as_tensor(np.array([b"raw", "text", 7, np.int64(3)], dtype=np.object_))
    assert out.tolist() == [b"raw", b"text", b"7", b"3"]
    assert as_tensor(np.array(["a", "bc"])).tolist() == [b"a", b"bc"]


def test_a_full_shared_memory_is_an_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    before = set(Path("/dev/shm").glob("inferpack-*"))
    with pytest.raises(OSError, match="No space left"):
        shm.Block.create(shm.MIN_BLOCK_BYTES)
    assert set(Path("/dev/shm").glob("inferpack-*")) == before  # nothing left behind
