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

    # A peak on the map's edge has no neighbour beyond it: it is not refined along that
    # axis (a parabola through a repeated sample would push it half a cell off the map).
    inside_x = (px > 0) & (px < width - 1)
    inside_y = (py > 0) & (py < height - 1)
    fx = px + np.where(inside_x, _subpixel(at(0, -1), score, at(0, 1)), 0.0)
    fy = py + np.where(inside_y, _subpixel(at(-1, 0), score, at(1, 0)), 0.0)
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


# OpenPose COCO-18 limbs: (keypoint a, keypoint b) and the two PAF channels (x, y) of each,
# in the order of the CMU COCO body model's part-affinity-field outputs.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)  # fmt: skip
LIMB_PAFS: tuple[tuple[int, int], ...] = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5),
    (6, 7), (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19),
    (26, 27),
)  # fmt: skip
_SAMPLES = 10  # points of the line integral along a candidate limb
_MIN_ALIGNED = 0.8  # share of them where the field points along the limb
_ALIGNED = 0.05  # field . direction counted as pointing along the limb
Peak = tuple[float, float, float]  # x, y (heatmap cells), score


def _peaks(heatmap: np.ndarray, threshold: float) -> list[Peak]:
    """Local maxima (3 x 3 non-maximum suppression) at or above ``threshold``."""
    padded = np.pad(heatmap, 1, constant_values=-np.inf)
    height, width = heatmap.shape
    neighbours = [
        padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    ]
    is_peak = (heatmap >= threshold) & np.all([heatmap >= n for n in neighbours], axis=0)
    ys, xs = np.nonzero(is_peak)
    return [(float(x), float(y), float(heatmap[y, x])) for y, x in zip(ys, xs, strict=True)]


def _limb_score(paf_x: np.ndarray, paf_y: np.ndarray, a: Peak, b: Peak) -> float | None:
    """Mean of the field along a -> b projected on its direction (penalised beyond half
    the map's height, as OpenPose does), or None when the field does not follow it."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = float(np.hypot(dx, dy))
    if length < 1e-6:
        return None
    t = np.linspace(0.0, 1.0, _SAMPLES)
    xs = np.clip(np.rint(a[0] + t * dx).astype(int), 0, paf_x.shape[1] - 1)
    ys = np.clip(np.rint(a[1] + t * dy).astype(int), 0, paf_x.shape[0] - 1)
    along = (paf_x[ys, xs] * dx + paf_y[ys, xs] * dy) / length
    score: float = float(along.mean()) + min(0.5 * paf_x.shape[0] / length - 1.0, 0.0)
    if float((along > _ALIGNED).mean()) < _MIN_ALIGNED or score <= 0:
        return None
    return score


def _connections(
    paf_x: np.ndarray, paf_y: np.ndarray, from_peaks: list[Peak], to_peaks: list[Peak]
) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of candidate limbs, best line integral first."""
    candidates = []
    for i, a in enumerate(from_peaks):
        for j, b in enumerate(to_peaks):
            score = _limb_score(paf_x, paf_y, a, b)
            if score is not None:
                candidates.append((score + a[2] + b[2], i, j, score))
    used_from: set[int] = set()
    used_to: set[int] = set()
    chosen = []
    for _, i, j, score in sorted(candidates, reverse=True):
        if i not in used_from and j not in used_to:
            used_from.add(i)
            used_to.add(j)
            chosen.append((i, j, score))
    return chosen


def _assemble(peaks: list[list[Peak]], pafs: np.ndarray) -> list[dict[int, tuple[int, float]]]:
    """People as {keypoint: (peak index, score)}: limbs joined where they share a peak."""
    people: list[dict[int, tuple[int, float]]] = []
    for (part_a, part_b), (channel_x, channel_y) in zip(LIMBS, LIMB_PAFS, strict=True):
        links = _connections(pafs[channel_x], pafs[channel_y], peaks[part_a], peaks[part_b])
        for i, j, _ in links:
            owner = next((p for p in people if p.get(part_a, (-1, 0.0))[0] == i), None)
            other = next((p for p in people if p.get(part_b, (-1, 0.0))[0] == j), None)
            if owner is None and other is None:
                people.append({part_a: (i, peaks[part_a][i][2]), part_b: (j, peaks[part_b][j][2])})
            elif owner is not None and other is None and part_b not in owner:
                owner[part_b] = (j, peaks[part_b][j][2])
            elif other is not None and owner is None and part_a not in other:
                other[part_a] = (i, peaks[part_a][i][2])
            elif (
                owner is not None
                and other is not None
                and owner is not other
                and not set(owner) & set(other)  # two halves of one person
            ):
                owner.update(other)
                people.remove(other)
    return people


def people_from_pafs(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    input_hw: tuple[int, int],
    threshold: float,
    to_original: Sequence[CoordinateMap] | None = None,
    *,
    max_people: int = 20,
) -> list[list[dict[str, tuple[float, float, float]]]]:
    """Several people per image: keypoint peaks (3 x 3 NMS) joined into limbs by the line
    integral of their part-affinity field, limbs into people by shared keypoints. Per
    image, people (at most ``max_people``, strongest first) as {keypoint: (x, y, score)}
    in the upload's pixels (input pixels without ``to_original``)."""
    maps = heatmaps.astype(np.float32, copy=False)[:, : len(COCO18_KEYPOINTS)]
    fields = pafs.astype(np.float32, copy=False)
    height, width = maps.shape[2:]
    input_h, input_w = input_hw
    result = []
    for image in range(maps.shape[0]):
        peaks = [_peaks(maps[image, k], threshold) for k in range(len(COCO18_KEYPOINTS))]
        people = _assemble(peaks, fields[image])
        people.sort(key=lambda p: sum(score for _, score in p.values()), reverse=True)
        found = []
        for person in people[:max_people]:
            parts = sorted(person)
            xs = np.array(
                [(peaks[k][person[k][0]][0] + 0.5) * input_w / width - 0.5 for k in parts]
            )
            ys = np.array(
                [(peaks[k][person[k][0]][1] + 0.5) * input_h / height - 0.5 for k in parts]
            )
            if to_original is not None:
                xs, ys = to_original[image](xs, ys)
            found.append(
                {
                    COCO18_KEYPOINTS[k]: (float(x), float(y), person[k][1])
                    for k, x, y in zip(parts, xs, ys, strict=True)
                }
            )
        result.append(found)
    return result
