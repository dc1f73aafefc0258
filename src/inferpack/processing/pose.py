"""OpenPose body heatmaps to keypoints (x, y, score) in the uploaded image's pixels.

The model answers heatmaps [19, h, w] (18 COCO keypoints and the background) at 1/stride of
its input. For the strongest person each keypoint is the peak of its channel, refined to
sub-pixel by a quadratic through the peak and its neighbours (a parabola per axis), mapped
from heatmap cells to input pixels (cell centres: ``(i + 0.5) * W / w - 0.5``) and then
through the request's resize and crop back to the upload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

COCO18_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
)
CoordinateMap = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _subpixel(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Offset in (-0.5, 0.5) of the vertex of the parabola through three samples."""
    curvature = left - 2 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    return np.clip(offset, -0.5, 0.5)


def keypoints_from_heatmaps(
    heatmaps: np.ndarray,
    input_hw: tuple[int, int],
    threshold: float,
    to_original: Sequence[CoordinateMap] | None = None,
) -> np.ndarray:
    """float32 [n, K, 3] = (x, y, score) per image and keypoint; a peak below
    ``threshold`` gives (-1, -1, score). ``to_original[i]`` maps image i's input pixels
    back to its upload (None: input pixels)."""
    maps = heatmaps.astype(np.float32, copy=False)
    if maps.shape[1] == len(COCO18_KEYPOINTS) + 1:
        maps = maps[:, : len(COCO18_KEYPOINTS)]  # the background channel is not a keypoint
    n, keypoints, height, width = maps.shape
    flat = maps.reshape(n, keypoints, -1)
    peak = flat.argmax(axis=-1)
    py, px = np.divmod(peak, width)
    score = np.take_along_axis(flat, peak[..., None], axis=-1)[..., 0]
    image, channel = np.indices((n, keypoints))

    def at(dy: np.ndarray | int, dx: np.ndarray | int) -> np.ndarray:
        y = np.clip(py + dy, 0, height - 1)
        x = np.clip(px + dx, 0, width - 1)
        picked: np.ndarray = maps[image, channel, y, x]
        return picked

    # At an edge the missing neighbour repeats the peak: the parabola then moves it inwards
    # only if the inner neighbour says so, never outside the map.
    fx = px + _subpixel(at(0, -1), score, at(0, 1))
    fy = py + _subpixel(at(-1, 0), score, at(1, 0))
    input_h, input_w = input_hw
    x_in = (fx + 0.5) * input_w / width - 0.5
    y_in = (fy + 0.5) * input_h / height - 0.5
    result = np.empty((n, keypoints, 3), dtype=np.float32)
    for i in range(n):
        xs, ys = x_in[i], y_in[i]
        if to_original is not None:
            xs, ys = to_original[i](xs, ys)
        found = score[i] >= threshold
        result[i, :, 0] = np.where(found, xs, -1.0)
        result[i, :, 1] = np.where(found, ys, -1.0)
        result[i, :, 2] = score[i]
    return result
