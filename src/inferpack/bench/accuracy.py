"""Accuracy of a candidate (e.g. bf16) against the fp32 eager reference on identical inputs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from inferpack.types import Tensor

# Heatmap channels that are keypoints (OpenPose body: 18 keypoints + 1 background).
OPENPOSE_KEYPOINTS = 18


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits, axis=1)[:, :k]


def classification_agreement(
    reference: np.ndarray, candidate: np.ndarray
) -> dict[str, float | None]:
    """top-1: same argmax; top-5 (five classes or more): same set of the five highest."""
    top1 = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    if reference.shape[1] < 5:
        return {"top1_agreement": top1, "top5_agreement": None}
    ref5, cand5 = _topk(reference, 5), _topk(candidate, 5)
    same5 = [set(a) == set(b) for a, b in zip(ref5, cand5, strict=True)]
    return {"top1_agreement": top1, "top5_agreement": float(np.mean(same5))}


def keypoint_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of (image, keypoint) pairs whose heatmap peak is at the same pixel."""
    ref = reference[:, :OPENPOSE_KEYPOINTS].reshape(reference.shape[0], OPENPOSE_KEYPOINTS, -1)
    cand = candidate[:, :OPENPOSE_KEYPOINTS].reshape(candidate.shape[0], OPENPOSE_KEYPOINTS, -1)
    return float(np.mean(ref.argmax(-1) == cand.argmax(-1)))


def compare(reference: Mapping[str, Tensor], candidate: Mapping[str, Tensor]) -> dict[str, object]:
    """Errors over all outputs flattened together, plus task-specific agreement."""
    ref = np.concatenate([np.asarray(v, np.float64).ravel() for v in reference.values()])
    cand = np.concatenate([np.asarray(candidate[k], np.float64).ravel() for k in reference])
    norm_ref = float(np.linalg.norm(ref))
    result: dict[str, object] = {
        "max_abs_error": float(np.max(np.abs(ref - cand))),
        "relative_l2": float(np.linalg.norm(ref - cand) / norm_ref) if norm_ref else 0.0,
        "cosine_similarity": float(ref @ cand / (norm_ref * np.linalg.norm(cand) or 1.0)),
        "top1_agreement": None,
        "top5_agreement": None,
        "keypoint_agreement": None,
    }
    logits = reference.get("logits")
    if logits is not None and logits.ndim == 2 and logits.shape[1] >= 2:
        result.update(classification_agreement(np.asarray(logits), np.asarray(candidate["logits"])))
    heatmaps = reference.get("heatmaps")
    if heatmaps is not None and heatmaps.ndim == 4:
        heat = np.asarray(candidate["heatmaps"])
        result["keypoint_agreement"] = keypoint_agreement(np.asarray(heatmaps), heat)
    return result
