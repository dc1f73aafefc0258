"""compile's request checks, naming, versions and the compiled model.yaml (no torch)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from inferpack.compile.spec import (
    CompileSpec,
    CompileUsageError,
    compiled_model_name,
    parse_buckets,
)
from inferpack.compile.writer import commit, compiled_config, next_version, staging
from inferpack.config.model_config import ModelConfig, TensorSpec, parse_model_config
from inferpack.config.model_config import model_config_to_dict as to_dict
from inferpack.config.processing_config import ClassificationOutput, Postprocess
from inferpack.repository.local import CONFIG_FILE

SOURCE = ModelConfig(
    name="mlp",
    platform="workload",
    workload="tiny-mlp",
    workload_options={"seed": 0},
    artifact="model.safetensors",
    inputs=(TensorSpec("input", "FP32", (16,)),),
    outputs=(TensorSpec("output", "FP32", (4,)),),
    max_batch_size=64,
    precision="fp32",
)


def _spec(**changes: object) -> CompileSpec:
    return CompileSpec(Path("repo"), "mlp", **changes)  # type: ignore[arg-type]


def test_name_says_mode_and_precision() -> None:
    assert compiled_model_name("resnet50", "onnx", "fp16") == "resnet50-onnx-fp16"
    assert _spec(mode="export", precision="bf16").output_model == "mlp-export-bf16"


def test_valid_request_has_no_problem() -> None:
    assert _spec().problems() == []
    assert _spec().model_problems(SOURCE) == []


def test_every_problem_reported_at_once() -> None:
    problems = _spec(
        mode="cudagraphs", target="cpu", batch_buckets=(4, 2), version=0, precision="int8"
    ).problems()
    text = " | ".join(problems)
    for expected in ("--precision", "--batch-buckets", "cudagraphs", "--version"):
        assert expected in text
    assert len(problems) == 4


def test_channels_last_refused_for_onnx() -> None:
    assert "--channels-last" in _spec(mode="onnx", channels_last=True).problems()[0]
    assert _spec(mode="export", channels_last=True).problems() == []


def test_buckets_above_max_batch_size_refused_naming_it() -> None:
    (problem,) = _spec(batch_buckets=(1, 128)).model_problems(SOURCE)
    assert "128 exceeds max_batch_size 64" in problem


def test_inductor_needs_a_torch_module_platform() -> None:
    script = ModelConfig(**{**_fields(SOURCE), "platform": "torchscript", "workload": None})
    assert "torch.compile" in _spec(mode="inductor").model_problems(script)[0]
    assert _spec(mode="onnx").model_problems(script) == []


def test_parse_buckets() -> None:
    assert parse_buckets("1, 2,8") == (1, 2, 8)
    with pytest.raises(CompileUsageError, match="--batch-buckets"):
        parse_buckets("1,two")


def test_next_version_follows_existing_and_honours_request(tmp_path: Path) -> None:
    assert next_version(tmp_path / "absent", None) == "1"
    for name in ("1", "3", "notes"):
        (tmp_path / name).mkdir()
    assert next_version(tmp_path, None) == "4"
    assert next_version(tmp_path, 7) == "7"
    with pytest.raises(CompileUsageError, match="already exists"):
        next_version(tmp_path, 3)


def test_ahead_of_time_config_has_fp32_io_and_buckets() -> None:
    config = compiled_config(_spec(mode="onnx", precision="fp16"), SOURCE, (1, 4))
    assert (config.name, config.platform, config.artifact) == (
        "mlp-onnx-fp16",
        "onnx",
        "model.onnx",
    )
    assert (config.precision, config.workload, config.compile.mode) == ("fp32", None, "none")
    assert config.compile.batch_buckets == (1, 4)
    assert compiled_config(_spec(mode="export"), SOURCE, ()).platform == "torch_aoti"
    _round_trips(config)


def test_inductor_config_keeps_source_artifact_and_compiles_at_load() -> None:
    spec = _spec(mode="inductor", precision="bf16", channels_last=True)
    config = compiled_config(spec, SOURCE, (1, 2))
    assert (config.platform, config.workload, config.precision) == ("workload", "tiny-mlp", "bf16")
    assert (config.compile.mode, config.compile.channels_last) == ("inductor", True)
    _round_trips(config)


def test_commit_adds_a_version_and_leaves_no_staging(tmp_path: Path) -> None:
    config = compiled_config(_spec(), SOURCE, (1,))
    for version in ("1", "2"):
        with staging(tmp_path, "mlp-onnx-fp32", version) as staged:
            (staged.version_dir / "model.onnx").write_bytes(b"graph")
            staged.write_config(config, tmp_path)  # no labels or tokenizer to copy
            commit(staged, tmp_path)
    model = tmp_path / "mlp-onnx-fp32"
    assert sorted(p.name for p in model.iterdir()) == ["1", "2", CONFIG_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp-onnx-fp32"]


def test_staging_removed_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staging(tmp_path, "m", "1"):
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


def _fields(config: ModelConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in ModelConfig.__dataclass_fields__}


def _round_trips(config: ModelConfig) -> None:
    assert parse_model_config(to_dict(config), "model.yaml") == config


def test_compiled_copy_carries_the_files_its_processing_reads(tmp_path: Path) -> None:
    """A classifier's labels (and a tokenizer) go with its compiled copy, also when a later
    version is committed beside an earlier one."""
    labelled = replace(
        SOURCE,
        postprocess=Postprocess(classification=ClassificationOutput("output", labels="labels.txt")),
    )
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    (source_dir / "labels.txt").write_text("a\nb\nc\nd\n")
    repository = tmp_path / "repo"
    repository.mkdir()
    config = compiled_config(_spec(), labelled, (1,))
    for version in ("1", "2"):
        with staging(repository, "mlp-onnx-fp32", version) as staged:
            (staged.version_dir / "model.onnx").write_bytes(b"graph")
            staged.write_config(config, source_dir)
            commit(staged, repository)
    model = repository / "mlp-onnx-fp32"
    assert sorted(p.name for p in model.iterdir()) == ["1", "2", "labels.txt", CONFIG_FILE]
    assert (model / "labels.txt").read_text() == "a\nb\nc\nd\n"
