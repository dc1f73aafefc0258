"""The compiled-artifact cache: what its key depends on, and that it returns checked bytes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from inferpack.compile.cache import CompileCache, cache_key
from inferpack.compile.spec import CompileSpec
from inferpack.config.model_config import ModelConfig, TensorSpec
from inferpack.repository import ModelSource

CONFIG = ModelConfig(
    name="mlp",
    platform="torch_export",
    inputs=(TensorSpec("input", "FP32", (16,)),),
    outputs=(TensorSpec("output", "FP32", (4,)),),
    max_batch_size=8,
    artifact="model.pt2",
)


@pytest.fixture
def source(tmp_path: Path) -> ModelSource:
    path = tmp_path / "model.pt2"
    path.write_bytes(b"weights")
    return ModelSource(CONFIG, "1", path)


def test_key_is_stable(source: ModelSource) -> None:
    spec = CompileSpec(Path("r"), "mlp")
    assert cache_key(spec, source, "2.13") == cache_key(spec, source, "2.13")


@pytest.mark.parametrize(
    "change",
    [
        {"target": "cuda"},
        {"precision": "fp16"},
        {"mode": "export"},
        {"batch_buckets": (1, 2)},
        {"channels_last": True},
    ],
)
def test_key_changes_with_every_setting(source: ModelSource, change: dict[str, object]) -> None:
    spec = CompileSpec(Path("r"), "mlp")
    changed = dataclasses.replace(spec, **change)  # type: ignore[arg-type]
    assert cache_key(spec, source, "2.13") != cache_key(changed, source, "2.13")


def test_key_ignores_flags_that_do_not_shape_the_artifact(source: ModelSource) -> None:
    spec = CompileSpec(Path("r"), "mlp")
    same = dataclasses.replace(spec, version=9, allow_accuracy_loss=True, repository=Path("x"))
    assert cache_key(spec, source, "2.13") == cache_key(same, source, "2.13")


def test_key_changes_with_torch_bytes_and_config(source: ModelSource) -> None:
    spec = CompileSpec(Path("r"), "mlp")
    key = cache_key(spec, source, "2.13")
    assert cache_key(spec, source, "2.14") != key
    other = dataclasses.replace(source, config=dataclasses.replace(CONFIG, max_batch_size=16))
    assert cache_key(spec, other, "2.13") != key
    source.artifact_path.write_bytes(b"other weights")
    assert cache_key(spec, source, "2.13") != key


def test_put_then_fetch_returns_the_bytes(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path / "cache")
    built = tmp_path / "model.onnx"
    built.write_bytes(b"graph bytes")
    assert not cache.fetch("k1", "model.onnx", tmp_path / "miss.onnx")
    cache.put("k1", built)
    assert cache.fetch("k1", "model.onnx", tmp_path / "hit.onnx")
    assert (tmp_path / "hit.onnx").read_bytes() == b"graph bytes"


def test_altered_cache_entry_is_not_reused(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path / "cache")
    built = tmp_path / "model.onnx"
    built.write_bytes(b"graph bytes")
    cache.put("k1", built)
    (stored,) = (tmp_path / "cache").rglob("model.onnx")
    stored.write_bytes(b"tampered!!!")
    assert not cache.fetch("k1", "model.onnx", tmp_path / "out.onnx")
