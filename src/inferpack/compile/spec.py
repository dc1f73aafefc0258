"""What ``inferpack compile`` is asked to do, checked before any work starts.

Errors (both :class:`~inferpack.errors.InferpackError`, so the message reaches the user):

- :class:`CompileUsageError`: the request cannot be carried out as given (a CUDA target
  without CUDA, cudagraphs on CPU, buckets above max_batch_size, ...). CLI exit 2.
- :class:`CompileError`: the conversion itself failed, or the result is less accurate than
  the tolerance allows (:class:`~inferpack.compile.tolerance.AccuracyLossError`). Exit 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from inferpack.config.compile_config import TORCH_MODULE_PLATFORMS
from inferpack.config.model_config import PRECISIONS, ModelConfig
from inferpack.errors import InferpackError

MODES: Final = ("export", "inductor", "cudagraphs", "onnx")
TARGETS: Final = ("cpu", "cuda")
# Powers of two up to 32: the batch sizes a dynamic batcher mostly forms under load.
DEFAULT_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32)
# Modes that write a new artifact; the others compile when the server loads the model.
AHEAD_OF_TIME_MODES: Final = frozenset({"export", "onnx"})


class CompileUsageError(InferpackError):
    """The compile request cannot be carried out as given; every problem in one message."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class CompileError(InferpackError):
    """Converting the model failed, or its result was refused."""


@dataclass(frozen=True, slots=True)
class CompileSpec:
    """One ``inferpack compile`` invocation."""

    repository: Path
    model: str
    target: str = "cpu"
    precision: str = "fp32"
    mode: str = "onnx"
    batch_buckets: tuple[int, ...] = DEFAULT_BATCH_BUCKETS
    channels_last: bool = False
    allow_accuracy_loss: bool = False
    version: int | None = None
    seed: int = 0

    @property
    def output_model(self) -> str:
        """The model the compiled version is written to (see docs/compile.md)."""
        return compiled_model_name(self.model, self.mode, self.precision)

    @property
    def device(self) -> str:
        return "cuda:0" if self.target == "cuda" else "cpu"

    def problems(self) -> list[str]:
        """Problems of the request alone (without reading the model)."""
        problems = []
        if self.mode not in MODES:
            problems.append(f"--mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.target not in TARGETS:
            problems.append(f"--target: {self.target!r} is not one of {', '.join(TARGETS)}")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision: {self.precision!r} is not one of {sorted(PRECISIONS)}")
        buckets = list(self.batch_buckets)
        if not buckets or any(b < 1 for b in buckets) or buckets != sorted(set(buckets)):
            problems.append(f"--batch-buckets: must be positive and increasing, got {buckets}")
        if self.mode == "cudagraphs" and self.target != "cuda":
            problems.append("--mode cudagraphs captures CUDA graphs: it needs --target cuda")
        if self.mode == "onnx" and self.channels_last:
            problems.append(
                "--channels-last: not applicable to --mode onnx (ONNX Runtime picks its own "
                "memory layouts)"
            )
        if self.version is not None and self.version < 1:
            problems.append(f"--version: must be a positive integer, got {self.version}")
        return problems

    def model_problems(self, config: ModelConfig) -> list[str]:
        """Problems of the request for this model."""
        problems = []
        if (
            self.mode in {"inductor", "cudagraphs"}
            and config.platform not in TORCH_MODULE_PLATFORMS
        ):
            problems.append(
                f"--mode {self.mode}: model {config.name!r} has platform {config.platform}; "
                f"torch.compile takes platforms {', '.join(sorted(TORCH_MODULE_PLATFORMS))}"
            )
        if config.platform not in {"workload", "torchscript", "torch_export"}:
            problems.append(
                f"model {config.name!r}: platform {config.platform} is already compiled; "
                "compile its source model"
            )
        if config.batching and self.batch_buckets[-1] > config.max_batch_size:
            problems.append(
                f"--batch-buckets: {self.batch_buckets[-1]} exceeds max_batch_size "
                f"{config.max_batch_size} of model {config.name!r}"
            )
        if any(spec.datatype == "BYTES" for spec in config.inputs):
            problems.append(f"model {config.name!r}: BYTES inputs cannot be compiled")
        return problems

    def buckets_for(self, config: ModelConfig) -> tuple[int, ...]:
        """The buckets to compile and check: none for a model without a batch dim."""
        return self.batch_buckets if config.batching else ()


def compiled_model_name(model: str, mode: str, precision: str) -> str:
    """``resnet50`` compiled by onnx at fp16 → ``resnet50-onnx-fp16``."""
    return f"{model}-{mode}-{precision}"


def parse_buckets(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` → (1, 2, 4); raises CompileUsageError naming the flag."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CompileUsageError(
            [f"--batch-buckets: expected comma-separated integers, got {text!r}"]
        ) from None
