"""Sentence embeddings from a text encoder's hidden states (sentence-transformers' pooling):
the mean over the tokens the attention mask marks, or the first token, then L2-normalised."""

from __future__ import annotations

import numpy as np

from inferpack.errors import InvalidInputError


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    result: np.ndarray = vectors / np.maximum(norms, 1e-12)
    return result.astype(np.float32, copy=False)


def mean_pool(hidden: np.ndarray, mask: np.ndarray, normalize: bool) -> np.ndarray:
    """hidden [n, L, D], mask [n, L] (1: a token, 0: padding) -> float32 [n, D]:
    sum(h * m) / max(sum(m), 1e-9) per row, then L2-normalised when ``normalize``."""
    if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
        raise InvalidInputError(
            f"mean pooling needs hidden states [n, L, D] and a mask [n, L], got "
            f"{list(hidden.shape)} and {list(mask.shape)}"
        )
    weights = mask.astype(np.float32)[..., None]
    summed = (hidden.astype(np.float32) * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    pooled: np.ndarray = (summed / counts).astype(np.float32)
    return _normalised(pooled) if normalize else pooled


def cls_pool(hidden: np.ndarray, normalize: bool) -> np.ndarray:
    """The first token's hidden state [n, D] (BERT's [CLS]), L2-normalised when asked."""
    first = hidden[:, 0, :].astype(np.float32)
    return _normalised(first) if normalize else first
