"""Tiny ONNX graphs built with ``onnx.helper`` (no torch), shared by the backend's unit tests
and the serving tests: y = relu(x @ W + b) and an INT64 sum, with their numpy answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IN_FEATURES, OUT_FEATURES = 6, 4
_RNG = np.random.default_rng(0)
WEIGHT = _RNG.standard_normal((IN_FEATURES, OUT_FEATURES)).astype(np.float32)
BIAS = _RNG.standard_normal(OUT_FEATURES).astype(np.float32)


def save_graph(graph: Any, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def dense_relu(path: Path) -> Path:
    """y = relu(x @ W + b), x of shape [batch, 6] with a symbolic batch dim."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["xwb"]),
            helper.make_node("Relu", ["xwb"], ["y"]),
        ],
        "dense_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN_FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT_FEATURES])],
        initializer=[numpy_helper.from_array(WEIGHT, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    return save_graph(graph, path)


def dense_relu_expected(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(x @ WEIGHT + BIAS, 0)
    return out


def int64_sum(path: Path) -> Path:
    """total = sum(ids, axis=1) + 1, ids INT64 of shape [batch, n] (n variable)."""
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["ids", "axes"], ["summed"], keepdims=0),
            helper.make_node("Add", ["summed", "one"], ["total"]),
        ],
        "int64_sum",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "n"])],
        [helper.make_tensor_value_info("total", TensorProto.INT64, ["batch"])],
        initializer=[one, axes],
    )
    return save_graph(graph, path)
