"""``repo init`` python examples: models written as users write theirs (docs/python-models.md).

- ``string-identity``: BYTES in, the same BYTES out (Triton's L0 tests use such a model);
- ``numpy-mlp``: tiny-mlp's shape (16 -> 32 -> 4) in plain numpy, weights in ``weights.npz``
  beside model.py, with per-request hooks: inputs are checked (a non-finite value fails
  that request alone, 400) and each answer gets its arg-max class.

Both use inferpack's contract (``InferpackModel``); Triton ``TritonPythonModel`` files run
as they are too (tests/triton_python_examples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import yaml

from inferpack.repository.local import CONFIG_FILE

_STRING_IDENTITY: Final = '''\
"""Answers every BYTES element it is sent, unchanged (a whole batch at once)."""

import numpy as np


class InferpackModel:
    def __init__(self, context):
        self.name = context.name

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"OUTPUT0": inputs["INPUT0"]}
'''

_NUMPY_MLP: Final = '''\
"""A two-layer perceptron in numpy: 16 features -> 32 hidden (ReLU) -> 4 logits."""

import numpy as np

from inferpack.errors import InvalidInputError


class InferpackModel:
    def __init__(self, context):
        weights = np.load(context.folder / "weights.npz")
        self.w1, self.b1 = weights["w1"], weights["b1"]
        self.w2, self.b2 = weights["w2"], weights["b2"]

    def preprocess(self, inputs):
        """Per request, before batching: a bad request fails alone (400)."""
        if not np.isfinite(inputs["input"]).all():
            raise InvalidInputError("input holds NaN or infinity")
        return inputs

    def execute(self, inputs):
        """The whole batch: every request's rows, concatenated."""
        hidden = np.maximum(inputs["input"] @ self.w1 + self.b1, 0.0)
        return {"logits": (hidden @ self.w2 + self.b2).astype(np.float32)}

    def postprocess(self, outputs):
        """Per request, after the batch: add each row's arg-max class."""
        label = outputs["logits"].argmax(axis=1, keepdims=True).astype(np.int64)
        return {**outputs, "label": label}
'''

_CONFIGS: Final[dict[str, dict[str, object]]] = {
    "string-identity": {
        "platform": "python",
        "max_batch_size": 64,
        "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "BYTES", "shape": [-1]}],
        "dynamic_batching": {"max_queue_delay_us": 1000},
    },
    "numpy-mlp": {
        "platform": "python",
        "max_batch_size": 64,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [16]}],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [4]},
            {"name": "label", "datatype": "INT64", "shape": [1]},
        ],
        "dynamic_batching": {"max_queue_delay_us": 1000},
    },
}
_SOURCES: Final = {"string-identity": _STRING_IDENTITY, "numpy-mlp": _NUMPY_MLP}
PYTHON_EXAMPLES: Final = tuple(_SOURCES)


def write_python_example(root: Path, name: str, seed: int = 0) -> Path:
    """Write the example ``name`` (one of PYTHON_EXAMPLES) under ``root``; its folder."""
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.py").write_text(_SOURCES[name])
    if name == "numpy-mlp":
        rng = np.random.default_rng(seed)
        np.savez(
            folder / "1" / "weights.npz",
            w1=(rng.standard_normal((16, 32)) / 4).astype(np.float32),
            b1=np.zeros(32, dtype=np.float32),
            w2=(rng.standard_normal((32, 4)) / 6).astype(np.float32),
            b2=np.zeros(4, dtype=np.float32),
        )
    config = {"name": name, **_CONFIGS[name]}
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    return folder
