from __future__ import annotations

from pathlib import Path

import pytest

from inferpack.config import parse_model_config
from inferpack.errors import ConfigError
from inferpack.repository import LocalRepository

VALID = {
    "name": "m",
    "platform": "torchscript",
    "max_batch_size": 8,
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, -1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [2]}],
    "dynamic_batching": {"max_queue_delay_us": 500, "preferred_batch_sizes": [8, 4]},
    "instances": {"count": 2, "device": "cuda:1"},
    "precision": "bf16",
}


def test_valid_config_parses_with_defaults() -> None:
    config = parse_model_config(VALID, "m/model.yaml")
    assert config.artifact == "model.pt"
    assert config.inputs[0].dims == (3, -1)
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.preferred_batch_sizes == (4, 8)
    assert config.dynamic_batching.max_queue_size == 1024
    assert config.instances.count == 2 and config.instances.device == "cuda:1"


def test_every_problem_is_reported_at_once_with_file_and_field() -> None:
    raw = {
        **VALID,
        "platform": "tensorflow",
        "max_batch_size": 2,
        "inputs": [{"name": "x", "datatype": "FLOAT", "shape": [0]}],
        "outputs": [],
        "instances": {"count": 0, "device": "tpu"},
        "precision": "int4",
        "colour": "blue",
    }
    with pytest.raises(ConfigError) as raised:
        parse_model_config(raw, "repo/m/model.yaml")
    problems = raised.value.problems
    expected_fields = [
        "platform",
        "inputs[0].datatype",
        "inputs[0].shape",
        "outputs",
        "instances.count",
        "instances.device",
        "precision",
        "colour",
        "dynamic_batching.preferred_batch_sizes",
    ]
    for field in expected_fields:
        assert any(p.startswith(f"repo/m/model.yaml: {field}:") for p in problems), field
    assert len(problems) == len(expected_fields)


def test_dynamic_batching_needs_a_batch_dim() -> None:
    raw = {**VALID, "max_batch_size": 0, "dynamic_batching": {}}
    with pytest.raises(ConfigError, match="dynamic_batching: needs max_batch_size > 0"):
        parse_model_config(raw, "f")


def test_repository_checks_name_versions_and_artifact(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.yaml").write_text("name: other\nplatform: torchscript\n")
    repo = LocalRepository(tmp_path)
    assert repo.model_names() == ["m"]
    with pytest.raises(ConfigError, match="inputs: must be a non-empty list"):
        repo.config("m")
    (folder / "model.yaml").write_text(
        "platform: torchscript\ninputs: [{name: x, datatype: FP32, shape: [1]}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [1]}]\nversion_policy: all\n"
    )
    with pytest.raises(ConfigError, match="no version folder"):
        repo.sources("m")
    for version in ("2", "10"):
        (folder / version).mkdir()
        (folder / version / "model.pt").write_bytes(b"")
    assert [s.version for s in repo.sources("m")] == ["2", "10"]
    (folder / "10" / "model.pt").unlink()
    with pytest.raises(ConfigError, match="artifact missing"):
        repo.sources("m")


def test_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.yaml").write_text("inputs: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        LocalRepository(tmp_path).config("m")
