"""Open-loop load shaped like a demand CSV: each model at its own rate.

A deployed plan promises each model its ``rps`` from the demand CSV; ``loadtest --demand``
checks that promise by sending exactly that mix. One Poisson process per model at rate
r_i, all independent, is the same process as one Poisson stream at the total rate
R = sum(r_i) whose every arrival picks model i with probability r_i / R (superposition of
independent Poisson processes; thinning read backwards). So the load generator keeps its
single open-loop sender and a categorical (``weighted``) model choice, and ``--rate-scale``
multiplies R, which scales every model's rate alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from inferpack.errors import InvalidInputError
from inferpack.plan.formats import Demand


@dataclass(frozen=True, slots=True)
class DemandLoad:
    """The models, their weights (their rates) and the total rate to send."""

    models: tuple[str, ...]
    weights: tuple[float, ...]
    rate_rps: float


def demand_load(demand: Sequence[Demand], rate_scale: float = 1.0) -> DemandLoad:
    """The open-loop load of ``demand`` at ``rate_scale`` times its rates; models with a
    rate of 0 stay in the list (they are part of the plan) but receive nothing."""
    if not math.isfinite(rate_scale) or rate_scale <= 0:
        raise InvalidInputError(f"rate scale must be > 0 (got {rate_scale})")
    total = sum(d.rps for d in demand)
    if total <= 0:
        raise InvalidInputError("the demand's rates add up to 0: nothing to send")
    return DemandLoad(
        models=tuple(d.model for d in demand),
        weights=tuple(d.rps for d in demand),
        rate_rps=total * rate_scale,
    )
