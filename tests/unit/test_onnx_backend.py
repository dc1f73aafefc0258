"""The ONNX Runtime backend on tiny graphs built with ``onnx.helper`` (no torch, no server)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from inferpack.backends import load_backends  # noqa: E402
from inferpack.backends.onnx_backend import OnnxBackend  # noqa: E402
from inferpack.config.model_config import parse_model_config  # noqa: E402
from inferpack.errors import ConfigError  # noqa: E402
from inferpack.repository import ModelSource  # noqa: E402
from tests.onnx_models import (  # noqa: E402
    BIAS,
    IN_FEATURES,
    OUT_FEATURES,
    WEIGHT,
    dense_relu,
    int64_sum,
    save_graph,
)
from tests.onnx_models import dense_relu_expected as _expected  # noqa: E402

RNG = np.random.default_rng(1)


def _dense_config(**changes: Any) -> dict[str, Any]:
    return {
        "name": "dense",
        "platform": "onnx",
        "max_batch_size": 8,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [IN_FEATURES]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [OUT_FEATURES]}],
        "instances": {"count": 1, "device": "cpu"},
        **changes,
    }


def _source(raw: dict[str, Any], artifact: Path) -> ModelSource:
    return ModelSource(parse_model_config(raw, "model.yaml"), "1", artifact)


def _load(raw: dict[str, Any], artifact: Path) -> list[OnnxBackend]:
    return OnnxBackend.load_instances(_source(raw, artifact))


def test_dense_relu_matches_numpy_at_several_batch_sizes(tmp_path: Path) -> None:
    (backend,) = load_backends(_source(_dense_config(), dense_relu(tmp_path / "m.onnx")))
    assert isinstance(backend, OnnxBackend) and backend.device == "cpu"
    for rows in (1, 3, 8):
        x = RNG.standard_normal((rows, IN_FEATURES)).astype(np.float32)
        (y,) = backend.run({"x": x}).values()
        assert y.shape == (rows, OUT_FEATURES) and y.dtype == np.float32
        np.testing.assert_allclose(y, _expected(x), rtol=1e-5, atol=1e-6)


def test_read_only_inputs_are_accepted(tmp_path: Path) -> None:
    """Inputs decoded from a request body are read-only views of its bytes."""
    (backend,) = _load(_dense_config(), dense_relu(tmp_path / "m.onnx"))
    x = RNG.standard_normal((2, IN_FEATURES)).astype(np.float32)
    view = np.frombuffer(x.tobytes(), dtype=np.float32).reshape(x.shape)
    assert not view.flags.writeable
    np.testing.assert_allclose(backend.run({"x": view})["y"], _expected(x), rtol=1e-5, atol=1e-6)


def test_int64_model_with_a_variable_dim(tmp_path: Path) -> None:
    raw = _dense_config(
        name="ids",
        inputs=[{"name": "ids", "datatype": "INT64", "shape": [-1]}],
        outputs=[{"name": "total", "datatype": "INT64", "shape": []}],
    )
    (backend,) = _load(raw, int64_sum(tmp_path / "m.onnx"))
    ids = np.arange(15, dtype=np.int64).reshape(3, 5)
    total = backend.run({"ids": ids})["total"]
    assert total.dtype == np.int64
    np.testing.assert_array_equal(total, ids.sum(axis=1) + 1)


def test_every_mismatch_is_reported_at_once(tmp_path: Path) -> None:
    raw = _dense_config(
        inputs=[{"name": "x", "datatype": "INT32", "shape": [IN_FEATURES, 2]}],
        outputs=[
            {"name": "y", "datatype": "FP32", "shape": [OUT_FEATURES + 1]},
            {"name": "scores", "datatype": "FP32", "shape": [1]},
        ],
    )
    with pytest.raises(ConfigError) as raised:
        _load(raw, dense_relu(tmp_path / "m.onnx"))
    text = str(raised.value)
    assert "dense: input 'x': datatype: model.yaml says INT32, the graph has FP32" in text
    assert "dense: input 'x': shape: rank 2 in the graph ([batch, 6])" in text
    assert "dense: output 'y': shape: dim 1 is 4 in the graph, 5 in model.yaml" in text
    assert "dense: output 'scores': not in the ONNX graph" in text


def test_graph_inputs_missing_from_model_yaml_are_refused(tmp_path: Path) -> None:
    raw = _dense_config(inputs=[{"name": "features", "datatype": "FP32", "shape": [6]}])
    with pytest.raises(ConfigError) as raised:
        _load(raw, dense_relu(tmp_path / "m.onnx"))
    assert "input 'features': not in the ONNX graph (inputs: ['x'])" in str(raised.value)
    assert "graph input 'x' is not in model.yaml inputs" in str(raised.value)


def test_bytes_tensors_are_refused(tmp_path: Path) -> None:
    """ORT's string tensors are text: bytes elements would be fed as their repr."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["o"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("o", TensorProto.STRING, ["batch"])],
    )
    raw = _dense_config(
        inputs=[{"name": "s", "datatype": "BYTES", "shape": []}],
        outputs=[{"name": "o", "datatype": "BYTES", "shape": []}],
    )
    with pytest.raises(ConfigError) as raised:
        _load(raw, save_graph(graph, tmp_path / "m.onnx"))
    assert str(raised.value).count("BYTES is not served by platform onnx") == 2


def test_narrow_precision_of_an_fp32_graph_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"precision fp16: the graph has FP32"):
        _load(_dense_config(precision="fp16"), dense_relu(tmp_path / "m.onnx"))


def test_fixed_batch_dim_is_refused_when_other_sizes_run(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, IN_FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, IN_FEATURES])],
    )
    raw = _dense_config(outputs=[{"name": "y", "datatype": "FP32", "shape": [IN_FEATURES]}])
    with pytest.raises(ConfigError, match="fixes the batch dim at 1, max_batch_size 8"):
        _load(raw, save_graph(graph, tmp_path / "m.onnx"))


def test_memory_counts_at_least_the_initializers(tmp_path: Path) -> None:
    (backend,) = _load(_dense_config(), dense_relu(tmp_path / "m.onnx"))
    backend.warm_up({"x": np.zeros((1, IN_FEATURES), dtype=np.float32)})
    assert backend.memory_bytes >= WEIGHT.nbytes + BIAS.nbytes


def test_instances_on_one_device_share_one_session(tmp_path: Path) -> None:
    raw = _dense_config(instances={"count": 3, "device": "cpu"})
    backends = _load(raw, dense_relu(tmp_path / "m.onnx"))
    assert len(backends) == 3 and len({id(b) for b in backends}) == 1


def test_concurrent_runs_on_a_shared_session_are_correct(tmp_path: Path) -> None:
    (backend,) = _load(_dense_config(), dense_relu(tmp_path / "m.onnx"))
    batches = [RNG.standard_normal((1 + i % 8, IN_FEATURES)).astype(np.float32) for i in range(64)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: backend.run({"x": x})["y"], batches))
    for x, y in zip(batches, results, strict=True):
        np.testing.assert_allclose(y, _expected(x), rtol=1e-5, atol=1e-6)


def test_cuda_without_the_provider_names_it(tmp_path: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    raw = _dense_config(instances={"count": 1, "device": "cuda:0"})
    with pytest.raises(ConfigError, match="no CUDAExecutionProvider"):
        _load(raw, dense_relu(tmp_path / "m.onnx"))
    (backend,) = _load(_dense_config(instances={"device": "auto"}), tmp_path / "m.onnx")
    assert backend.device == "cpu"


def test_closed_backend_refuses_to_run(tmp_path: Path) -> None:
    (backend,) = _load(_dense_config(), dense_relu(tmp_path / "m.onnx"))
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.run({"x": np.zeros((1, IN_FEATURES), dtype=np.float32)})
