"""The parameter of a profile's server block that no counter measures: the service spread.

The statistics extension gives each batch size's *mean* service time. A real worker's
batches vary around it (the event loop and the load generator take the CPU, the GIL passes
between threads, the allocator and caches differ between models), and queueing delay grows
with that variance (Pollaczek-Khinchine: the M/G/1 wait is proportional to 1 + CV²). A
simulation with exact means and no variance predicts the light-load p90 well and the
high-load p90 too low.

So the profile fits it: for each CV on a grid, simulate the measured levels themselves
(the same copies, traffic split and rates, the block's curve, workers, frontend and
overhead) and keep the CV whose simulated p90s are closest to the measured ones, in
squared log ratio, over the levels that answered their rate (``service_cv``); and a CV
per level, non-decreasing in the rate, the sequence closest to the levels' own p90s in
summed absolute log ratio (``service_cv_by_rate``, what the simulations use at a server's
rate; :func:`isotonic_indices`). One CV for every
level fits the middle ones and overstates the light ones: on the 2-core VM, the measured
p90 at 30 % of capacity was 0.61 to 0.86 of the prediction with one CV, 0.76 to 1.2 with
the table (docs/plan.md). The fit uses only the profile's own measurement; how well it
transfers to other model counts and skews is what ``benchmarks/validate_simulate.py`` checks.
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
    (those that answered their rate, without errors) and the per-level table (module
    docstring); unchanged when none qualifies."""
    usable = usable_points(points)
    if not usable:
        return block
    errors = log_errors(block, usable, shares)
    overall = min(range(len(CV_GRID)), key=lambda c: (sum(e**2 for e in errors[c]), c))
    table = tuple(
        (point.rate_rps, CV_GRID[c])
        for point, c in zip(usable, isotonic_indices(errors), strict=True)
    )
    return replace(block, service_cv=CV_GRID[overall], service_cv_by_rate=table)


def usable_points(points: Sequence[RatePoint]) -> list[RatePoint]:
    """The levels a fit may use: answered their rate, no errors, a p90; by rate."""
    return sorted(
        (
            p
            for p in points
            if p.answered() and p.error_pct < 1.0 and math.isfinite(p.p90_ms) and p.p90_ms > 0
        ),
        key=lambda p: p.rate_rps,
    )


def log_errors(
    block: ServerModel, points: Sequence[RatePoint], shares: np.ndarray
) -> list[list[float]]:
    """errors[c][i]: |log(simulated / measured p90)| at level i with CV_GRID[c]."""
    return [
        [
            abs(math.log(simulated_p90_ms(_fixed(block, cv), shares, p.rate_rps) / p.p90_ms))
            for p in points
        ]
        for cv in CV_GRID
    ]


def isotonic_indices(errors: Sequence[Sequence[float]]) -> list[int]:
    """The non-decreasing choice of grid index per level with the least summed error
    (isotonic regression in absolute log error, by dynamic programming over the grid): one
    level far off its neighbours, either way, is outvoted by them. Ties go to the smaller
    spread.

    Chosen over each level's own best made non-decreasing by a running maximum (the table
    before): the maximum of noisy levels grows with their number, so more levels (fill
    levels) made the predictions worse. Over the seven stored validation runs
    (``benchmarks/refit_validation.py``, docs/plan.md) this table puts 75 of 132 points
    within ±25 % against 66, with the median measured / predicted 1.02 straight and 1.08
    through the router against 0.91 and 0.99; its misses lean the other way (measured above
    1.25x the prediction at 40 points against 32), which the planner's ``--headroom`` is
    for."""
    grid, levels = len(errors), len(errors[0]) if errors else 0
    if not levels:
        return []
    cost = [errors[c][0] for c in range(grid)]  # least error of levels 0..i, level i at c
    back: list[list[int]] = []  # back[i - 1][c]: level i - 1's index when level i is at c
    for i in range(1, levels):
        best, arg, step, new_cost = math.inf, 0, [], []
        for c in range(grid):
            if cost[c] < best:
                best, arg = cost[c], c
            step.append(arg)
            new_cost.append(best + errors[c][i])
        back.append(step)
        cost = new_cost
    chosen = [min(range(grid), key=lambda c: (cost[c], c))]
    for step in reversed(back):
        chosen.append(step[chosen[-1]])
    return chosen[::-1]


def running_max_indices(errors: Sequence[Sequence[float]]) -> list[int]:
    """Each level's own best grid index, never below the previous level's (the table before
    :func:`isotonic_indices`; kept for ``benchmarks/refit_validation.py``'s comparison)."""
    chosen: list[int] = []
    for level in range(len(errors[0]) if errors else 0):
        best = min(range(len(errors)), key=lambda c: (errors[c][level], c))
        chosen.append(max(best, chosen[-1]) if chosen else best)
    return chosen


def _fixed(block: ServerModel, cv: float) -> ServerModel:
    """``block`` with one spread at every rate."""
    return replace(block, service_cv=cv, service_cv_by_rate=())
