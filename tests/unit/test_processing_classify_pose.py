"""Top-k (JSON and Triton's classification strings) and OpenPose keypoints (no server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from inferpack.errors import ConfigError
from inferpack.processing.classify import (
    imagenet1k_labels,
    load_labels,
    softmax,
    top_k,
    top_k_json,
    triton_classification,
    unique_labels,
)
from inferpack.processing.pose import (
    COCO18_KEYPOINTS,
    LIMB_PAFS,
    LIMBS,
    keypoints_from_heatmaps,
    people_from_pafs,
)


@settings(max_examples=60, deadline=None)
@given(
    scores=arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 40)),
        elements=st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]),  # many ties
    ),
    k=st.integers(1, 50),
)
def test_top_k_equals_a_stable_full_sort(scores: np.ndarray, k: int) -> None:
    indices, values = top_k(scores, k)
    expected = np.argsort(-scores, axis=-1, kind="stable")[:, : min(k, scores.shape[1])]
    assert np.array_equal(indices, expected)
    assert np.array_equal(values, np.take_along_axis(scores, expected, axis=-1))


def test_top_k_of_one_row() -> None:
    indices, values = top_k(np.array([0.1, 0.7, 0.2], np.float32), 2)
    assert indices.tolist() == [1, 2] and values.tolist() == pytest.approx([0.7, 0.2])


def test_softmax_is_stable_and_sums_to_one() -> None:
    result = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, 1.0, 2.0]]))
    assert np.isfinite(result).all()
    assert np.allclose(result.sum(-1), 1.0)
    assert result[0].tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_triton_strings_parse_back() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [3.0, -1.0, 2.0]], np.float32)
    strings = triton_classification(scores, 2, ["cat", "dog", "bird"])
    assert strings.shape == (2, 2)
    assert strings[0, 0] == b"0.900000:1:dog"
    value, index, label = strings[1, 1].decode().split(":", 2)
    assert (float(value), int(index), label) == (2.0, 2, "bird")
    unlabelled = triton_classification(scores[0], 5, None)
    assert unlabelled.shape == (3,) and unlabelled[0] == b"0.900000:1"


def test_json_top_k_labels_and_duplicates() -> None:
    answers = top_k_json(np.array([[0.0, 2.0, 1.0]]), 2, ["crane", "crane", "heron"], True)
    assert list(answers[0]) == ["crane (1)", "heron"]
    assert sum(top_k_json(np.array([[0.0, 2.0, 1.0]]), 3, None, True)[0].values()) == (
        pytest.approx(1.0, abs=1e-5)
    )
    assert unique_labels(["a", "b", "a", "a"]) == ("a", "b", "a (2)", "a (3)")


def test_imagenet_labels_come_from_the_package() -> None:
    labels = imagenet1k_labels()
    assert len(labels) == 1000 and labels[0] == "tench"


def test_label_files(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("zero\none\n\n\n")
    assert load_labels(tmp_path, "labels.txt") == ("zero", "one")
    assert len(load_labels(tmp_path, "imagenet1k")) == 1000
    with pytest.raises(ConfigError, match=r"missing\.txt"):
        load_labels(tmp_path, "missing.txt")


def _gaussian(height: int, width: int, cx: float, cy: float, peak: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return peak * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 1.5**2))


def test_peaks_are_recovered_to_sub_pixel() -> None:
    rng = np.random.default_rng(0)
    centres = rng.uniform(3, 42, size=(18, 2))
    heatmaps = np.zeros((1, 19, 46, 46), np.float32)
    for channel, (cx, cy) in enumerate(centres):
        heatmaps[0, channel] = _gaussian(46, 46, cx, cy)
    heatmaps[0, 18] = 5.0  # the background channel is ignored
    points = keypoints_from_heatmaps(heatmaps, (368, 368), threshold=0.1)
    assert points.shape == (1, 18, 3)
    expected_x = (centres[:, 0] + 0.5) * 8 - 0.5
    expected_y = (centres[:, 1] + 0.5) * 8 - 0.5
    assert np.abs(points[0, :, 0] - expected_x).max() < 0.25 * 8
    assert np.abs(points[0, :, 1] - expected_y).max() < 0.25 * 8
    assert len(COCO18_KEYPOINTS) == 18


def test_weak_keypoints_are_marked_missing_and_mapped_back() -> None:
    heatmaps = np.zeros((2, 18, 10, 10), np.float32)
    heatmaps[0, :, 5, 5] = 0.05
    heatmaps[1, :, 2, 7] = 0.9

    def halve(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x / 2, y / 2

    points = keypoints_from_heatmaps(heatmaps, (80, 80), 0.1, [halve, halve])
    assert (points[0, :, :2] == -1).all() and points[0, 0, 2] == pytest.approx(0.05)
    assert points[1, 0, 0] == pytest.approx((7.5 * 8 - 0.5) / 2)
    assert points[1, 0, 1] == pytest.approx((2.5 * 8 - 0.5) / 2)


def _draw_person(
    heatmaps: np.ndarray, pafs: np.ndarray, joints: dict[int, tuple[float, float]]
) -> None:
    """Gaussian peaks at the joints and unit vectors along each limb (1 cell wide)."""
    for part, (x, y) in joints.items():
        heatmaps[part] = np.maximum(heatmaps[part], _gaussian(46, 46, x, y))
    for (a, b), (cx, cy) in zip(LIMBS, LIMB_PAFS, strict=True):
        if a not in joints or b not in joints:
            continue
        (xa, ya), (xb, yb) = joints[a], joints[b]
        length = np.hypot(xb - xa, yb - ya)
        for t in np.linspace(0, 1, 50):
            x, y = round(xa + t * (xb - xa)), round(ya + t * (yb - ya))
            pafs[cx, y, x] = (xb - xa) / length
            pafs[cy, y, x] = (yb - ya) / length


def test_two_people_are_separated_by_their_fields() -> None:
    body = {0: (0.0, -8.0), 1: (0.0, 0.0), 2: (-4.0, 0.0), 5: (4.0, 0.0), 8: (-2.0, 10.0)}
    body |= {11: (2.0, 10.0), 9: (-2.0, 18.0), 12: (2.0, 18.0)}
    heatmaps = np.zeros((1, 19, 46, 46), np.float32)
    pafs = np.zeros((1, 38, 46, 46), np.float32)
    for offset_x in (10, 33):
        person = {k: (x + offset_x, y + 12) for k, (x, y) in body.items()}
        _draw_person(heatmaps[0], pafs[0], person)
    (people,) = people_from_pafs(heatmaps, pafs, (368, 368), threshold=0.3)
    assert len(people) == 2
    necks = sorted(person["neck"][0] for person in people)
    assert necks == pytest.approx([(10.5) * 8 - 0.5, (33.5) * 8 - 0.5])
    for person in people:
        assert len(person) == len(body)  # every joint of one body, none of the other
        xs = [x for x, _, _ in person.values()]
        assert max(xs) - min(xs) < 10 * 8


def test_no_field_no_people() -> None:
    heatmaps = np.zeros((1, 19, 46, 46), np.float32)
    heatmaps[0, 1] = _gaussian(46, 46, 20, 20)
    assert people_from_pafs(heatmaps, np.zeros((1, 38, 46, 46), np.float32), (368, 368), 0.3) == [
        []
    ]


def test_a_peak_on_the_edge_stays_on_the_map() -> None:
    heatmaps = np.zeros((1, 18, 8, 8), np.float32)
    heatmaps[0, :, 0, 0] = 0.9  # top-left corner cell
    heatmaps[0, :, 0, 1] = 0.5
    heatmaps[0, :, 1, 0] = 0.5
    points = keypoints_from_heatmaps(heatmaps, (64, 64), threshold=0.1)
    assert (points[0, :, :2] >= 0).all()  # found, not pushed off the map (x = -0.5)
    assert points[0, 0, 0] == pytest.approx(3.5) and points[0, 0, 1] == pytest.approx(3.5)
