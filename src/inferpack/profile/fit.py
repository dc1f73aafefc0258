"""The one parameter of a profile's server block that no counter measures: ``service_cv``.

The statistics extension gives each batch size's *mean* service time. A real worker's
batches vary around it (the event loop and the load generator take the CPU, the GIL passes
between threads, the allocator and caches differ between models), and queueing delay grows
with that variance (Pollaczek-Khinchine: the M/G/1 wait is proportional to 1 + CV²). A
simulation with exact means and no variance predicts the light-load p90 well and the
high-load p90 too low.

So the profile fits it: for each CV on a grid, simulate the measured levels themselves
(the same copies, traffic split and rates, the block's curve, workers, frontend and
overhead) and keep the CV whose simulated p90s are closest to the measured ones, in
squared log ratio, over the levels that answered their rate. The fit uses only the
profile's own measurement; how well it transfers to other model counts and skews is
what ``benchmarks/validate_simulate.py`` checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from inferpack.plan.formats import RatePoint
from inferpack.plan.server_model import ServerModel
from inferpack.plan.tail import server_p90_ms, sim_model

CV_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
# Requests simulated per level and CV, and the seconds at least (p90 within a few %).
FIT_REQUESTS = 20_000
MIN_FIT_S = 10.0
SEED = 7


def traffic_weights(traffic: str, copies: int) -> np.ndarray:
    """Each copy's share of the requests: uniform, or zipf:S (rank k ∝ k^-S)."""
    exponent = 0.0 if traffic == "uniform" else float(traffic.partition(":")[2])
    weights: np.ndarray = 1.0 / np.arange(1, copies + 1, dtype=float) ** exponent
    share: np.ndarray = weights / weights.sum()
    return share


def simulated_p90_ms(
    block: ServerModel, shares: np.ndarray, rate_rps: float, seed: int = SEED
) -> float:
    """p90 (ms, with the block's overhead) of a server of len(shares) copies at rate_rps."""
    rates = [float(rate_rps * s) for s in shares]
    models = [sim_model(f"copy-{i}", r, block) for i, r in enumerate(rates)]
    duration_s = max(MIN_FIT_S, FIT_REQUESTS / max(rate_rps, 1e-9))
    p90 = server_p90_ms(block, models, rates, duration_s, seed)
    return block.overhead_ms + block.frontend_ms if p90 is None else p90


def fit_service_cv(
    block: ServerModel, points: Sequence[RatePoint], shares: np.ndarray
) -> ServerModel:
    """``block`` with the grid's CV that best reproduces the measured p90 of ``points``
    (those that answered their rate, without errors); unchanged when none qualifies."""
    usable = [
        p
        for p in points
        if p.answered() and p.error_pct < 1.0 and math.isfinite(p.p90_ms) and p.p90_ms > 0
    ]
    if not usable:
        return block
    best_cv, best_error = block.service_cv, math.inf
    for cv in CV_GRID:
        trial = replace(block, service_cv=cv)
        error = sum(
            math.log(simulated_p90_ms(trial, shares, p.rate_rps) / p.p90_ms) ** 2 for p in usable
        )
        if error < best_error - 1e-12:
            best_cv, best_error = cv, error
    return replace(block, service_cv=best_cv)
