"""Compile batch x inference batch in the bench (``bench/compiled.py``) and its report
table: chunking and padding as the server does them, bucket checks, the rendered table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferpack.batching.buckets import chunk_rows
from inferpack.bench.compiled import compiled_buckets, compiled_variant, run_chunked
from inferpack.config.compile_config import CompileConfig
from inferpack.config.model_config import InstanceConfig, ModelConfig, TensorSpec
from inferpack.errors import ConfigError
from inferpack.report import render_report
from inferpack.report.plots import _series
from inferpack.repository import ModelSource
from inferpack.types import Tensor

WEIGHTS = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)


class RecordingModel:
    """A row-wise linear model that keeps every batch it was called with."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        x = np.asarray(inputs["x"])
        self.calls.append(x)
        return {"y": x @ WEIGHTS, "twice": 2 * x}


def _inputs(rows: int) -> dict[str, Tensor]:
    return {"x": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)}


def test_five_rows_at_compile_batch_four_run_as_two_calls_of_four() -> None:
    model, inputs = RecordingModel(), _inputs(5)

    outputs = run_chunked(model.run, inputs, 4)

    assert [call.shape[0] for call in model.calls] == [4, 4]
    np.testing.assert_array_equal(model.calls[0], inputs["x"][:4])
    last = model.calls[1]
    np.testing.assert_array_equal(last[0], inputs["x"][4])
    np.testing.assert_array_equal(last[1:], np.repeat(inputs["x"][4:5], 3, axis=0))  # 3 padded
    eager = RecordingModel().run(inputs)
    assert set(outputs) == {"y", "twice"}
    for name, array in eager.items():
        assert outputs[name].shape[0] == 5
        np.testing.assert_allclose(outputs[name], array, rtol=1e-6)


@pytest.mark.parametrize(("rows", "bucket", "calls"), [(1, 4, 1), (8, 4, 2), (9, 2, 5), (3, 3, 1)])
def test_every_call_has_exactly_the_compile_batch(rows: int, bucket: int, calls: int) -> None:
    model = RecordingModel()

    outputs = run_chunked(model.run, _inputs(rows), bucket)

    assert [call.shape[0] for call in model.calls] == [bucket] * calls
    assert len(model.calls) == len(chunk_rows(rows, bucket))
    np.testing.assert_array_equal(outputs["twice"], 2 * _inputs(rows)["x"])


def _config(max_batch_size: int = 8, platform: str = "workload") -> ModelConfig:
    return ModelConfig(
        "m",
        platform,
        inputs=(TensorSpec("x", "FP32", (3,)),),
        outputs=(TensorSpec("y", "FP32", (2,)),),
        max_batch_size=max_batch_size,
        instances=InstanceConfig(1, "cpu"),
        compile=CompileConfig(channels_last=True),
    )


def test_buckets_over_max_batch_size_are_skipped_with_a_warning() -> None:
    warnings: list[str] = []

    kept = compiled_buckets((16, 4, 1), "inductor", _config(8), "cpu", warnings)

    assert kept == [1, 4]
    assert warnings == ["compiled buckets [16] exceed max_batch_size 8"]


def test_impossible_compiles_are_refused_all_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        compiled_buckets((4,), "cudagraphs", _config(0), "cpu", [])
    message = str(raised.value)
    assert "cudagraphs needs a CUDA device, not cpu" in message
    assert "no batch dimension" in message

    with pytest.raises(ConfigError, match="not one of"):
        compiled_buckets((4,), "tensorrt", _config(), "cpu", [])
    with pytest.raises(ConfigError, match="needs platform workload or torch_export, not onnx"):
        compiled_buckets((4,), "inductor", _config(platform="onnx"), "cpu", [])
    assert compiled_buckets((4,), "none", _config(platform="onnx"), "cpu", []) == [4]


def test_compiled_variant_compiles_for_one_bucket_and_keeps_channels_last() -> None:
    source = ModelSource(_config(), "1", Path("model.safetensors"))

    variant = compiled_variant(source, "inductor", 4)

    assert variant.config.compile == CompileConfig("inductor", (4,), channels_last=True)
    assert source.config.compile.batch_buckets == ()


def _row(bucket: int | None, batch: int, items: float, p90: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "precision": "fp32",
        "batch_size": batch,
        "instances": 1,
        "items_per_s": items,
        "latency_ms": {"p50": p90 / 2, "p90": p90},
    }
    if bucket is not None:
        row["compiled_bucket"] = bucket
    return row


def _document(rows: list[dict[str, Any]]) -> dict[str, Any]:
    spec = {"model": "tiny-mlp", "device": "cpu", "compile_mode": "inductor"}
    return {"schema": "inferpack.bench/1", "spec": spec, "results": rows, "warnings": []}


def test_report_shows_compile_batch_by_inference_batch() -> None:
    rows = [
        _row(bucket, batch, 1000.0 * bucket * batch, 0.5 * batch)
        for bucket in (1, 4)
        for batch in (1, 4, 8)
    ]

    page = render_report([_document(rows)])

    table = page.split('<table class="compiled">')[1].split("</table>")[0]
    assert re.findall(r"<th>(batch \d+)</th>", table) == ["batch 1", "batch 4", "batch 8"]
    assert re.findall(r'<th scope="row">([^<]+)</th>', table) == ["compile 1", "compile 4"]
    assert "32,000 items/s · p90 4.00 ms" in table  # compile 4, batch 8
    assert "compile mode inductor" in page
    assert "<th>compile batch</th>" in page.split('<table class="results">')[1]
    labels = [series.label for series in _series([_document(rows)])]
    assert labels == ["fp32, compile batch 1", "fp32, compile batch 4"]


def test_report_of_a_document_without_compiled_rows_has_no_such_table() -> None:
    page = render_report([_document([_row(None, 1, 10.0, 1.0), _row(None, 4, 30.0, 2.0)])])

    assert "Compile batch" not in page and "compile batch" not in page
    assert '<table class="compiled">' not in page
