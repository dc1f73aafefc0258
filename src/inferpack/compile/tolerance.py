"""How far a compiled model may drift from the fp32 eager reference, per precision.

bench reports accuracy without judging it; compile refuses what falls outside these:

- fp32 (onnx, inductor, export): the same arithmetic, only reordered or fused. Float32
  reassociation errors are ~1e-7 per op and ~1e-6 relative over a deep network; 1e-4
  leaves two orders of headroom yet catches a wrong graph (a wrong op costs O(1)).
  Cosine ≥ 0.99999 is the same bound seen as an angle (1 - cos ≈ rel_l2² / 2).
- bf16 / fp16: unit roundoff 2^-9 ≈ 2e-3 (bf16) and 2^-11 ≈ 5e-4 (fp16); errors of
  independent layers add up to a few 1e-3 relative for the seeds' networks; 2e-2 is about
  ten roundoffs of bf16. For classifiers, top-1 agreement ≥ 0.99 is what a user sees:
  over fewer than 100 rows it allows no changed prediction.

A metric a model does not have (top-1 for a regressor) is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from inferpack.compile.spec import CompileError


@dataclass(frozen=True, slots=True)
class Bound:
    """``metric`` must be ≤ ``limit`` (``at_least`` False) or ≥ it (True)."""

    metric: str
    limit: float
    at_least: bool = False

    def holds(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def describe(self) -> str:
        return f"{self.metric} {'>=' if self.at_least else '<='} {self.limit:g}"


_LOW_PRECISION: Final = (Bound("relative_l2", 2e-2), Bound("top1_agreement", 0.99, at_least=True))
TOLERANCES: Final[dict[str, tuple[Bound, ...]]] = {
    "fp32": (Bound("relative_l2", 1e-4), Bound("cosine_similarity", 0.99999, at_least=True)),
    "bf16": _LOW_PRECISION,
    "fp16": _LOW_PRECISION,
}


@dataclass(frozen=True, slots=True)
class Violation:
    bound: Bound
    value: float

    def describe(self) -> str:
        return f"{self.bound.metric} = {self.value:.6g} (tolerance: {self.bound.describe()})"


class AccuracyLossError(CompileError):
    """The compiled model is outside the tolerance of its precision."""

    def __init__(self, violations: list[Violation]) -> None:
        text = "; ".join(v.describe() for v in violations)
        super().__init__(
            f"accuracy outside tolerance against fp32 eager: {text}. Nothing was written; "
            "--allow-accuracy-loss writes it anyway"
        )
        self.violations = violations


def violations(metrics: Mapping[str, object], precision: str) -> list[Violation]:
    """The bounds of ``precision`` that ``metrics`` (bench.accuracy.compare) break."""
    found = []
    for bound in TOLERANCES[precision]:
        value = metrics.get(bound.metric)
        # NaN holds no bound (every comparison with it is false).
        if isinstance(value, int | float) and not bound.holds(float(value)):
            found.append(Violation(bound, float(value)))
    return found


def tolerance_dict(precision: str) -> dict[str, str]:
    return {bound.metric: bound.describe() for bound in TOLERANCES[precision]}
