"""The pipeline a model's processing config builds: upload checks, pose and top-k outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferpack.config.model_config import parse_model_config
from inferpack.errors import InvalidInputError
from inferpack.processing.pipeline import Pipeline, Prepared, classify
from tests.unit.test_processing_classify_pose import _draw_person


def _pose_config(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "pose",
        "platform": "torchscript",
        "max_batch_size": 2,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 368, 368]}],
        "outputs": [
            {"name": "pafs", "datatype": "FP32", "shape": [38, 46, 46]},
            {"name": "heatmaps", "datatype": "FP32", "shape": [19, 46, 46]},
        ],
        "preprocess": {"image": {"resize": [368, 368]}},
        "postprocess": {"pose": {"heatmaps": "heatmaps", "pafs": "pafs", "threshold": 0.3}},
    }
    raw.update(changes)
    return raw


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline.load(parse_model_config(_pose_config(), "model.yaml"), tmp_path)


def _images(*items: object) -> np.ndarray:
    column = np.empty((len(items), 1), dtype=np.object_)
    column[:, 0] = items
    return column


def test_upload_rows_are_checked(pipeline: Pipeline) -> None:
    assert pipeline.upload_items({"images": _images(b"a", b"b")}) == [b"a", b"b"]
    assert pipeline.upload_items({"input": np.zeros((1, 3, 368, 368), np.float32)}) is None
    with pytest.raises(InvalidInputError, match="either 'images' or"):
        pipeline.upload_items({"images": _images(b"a"), "input": np.zeros(1)})
    with pytest.raises(InvalidInputError, match="must be BYTES"):
        pipeline.upload_items({"images": np.zeros((1, 1), np.float32)})
    with pytest.raises(InvalidInputError, match="1 to 2 per request"):
        pipeline.upload_items({"images": _images(b"a", b"b", b"c")})
    with pytest.raises(InvalidInputError, match=r"must be \[n\] or \[n, 1\]"):
        pipeline.upload_items({"images": np.empty((1, 2), dtype=np.object_)})


def test_pose_adds_keypoints_and_people(pipeline: Pipeline) -> None:
    heatmaps = np.zeros((1, 19, 46, 46), np.float32)
    pafs = np.zeros((1, 38, 46, 46), np.float32)
    for offset in (10, 33):
        joints = {1: (offset, 15.0), 2: (offset - 4.0, 15.0), 5: (offset + 4.0, 15.0)}
        _draw_person(heatmaps[0], pafs[0], joints)
    inputs = {"input": np.zeros((1, 3, 368, 368), np.float32)}
    outputs = pipeline.finish(inputs, {"pafs": pafs, "heatmaps": heatmaps}, None)
    assert outputs["keypoints"].shape == (1, 18, 3)
    people = json.loads(outputs["people"][0, 0])
    assert len(people) == 2 and all(
        set(p) == {"neck", "right_shoulder", "left_shoulder"} for p in people
    )


def test_classify_any_output() -> None:
    outputs = {"logits": np.array([[0.1, 0.3, 0.2]], np.float32)}
    strings = classify(outputs, {"logits": 2}, lambda name: ("a", "b", "c"))["logits"]
    assert strings.tolist() == [[b"0.300000:1:b", b"0.200000:2:c"]]
    with pytest.raises(InvalidInputError, match="not numeric"):
        classify({"x": _images(b"q")}, {"x": 1}, lambda name: None)


def test_prepared_keeps_transforms(pipeline: Pipeline) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (255, 0, 0)).save(buffer, format="PNG")
    row = pipeline.image_row(buffer.getvalue(), 0)
    prepared: Prepared = pipeline.stack_images([row, row])
    assert prepared.inputs["input"].shape == (2, 3, 368, 368)
    assert prepared.transforms is not None and prepared.transforms[0].width == 200
