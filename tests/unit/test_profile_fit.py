"""The profile's fitted service-time spread: recovered from p90s that a known spread made."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from inferpack.plan.formats import RatePoint
from inferpack.plan.server_model import ServerModel
from inferpack.profile.fit import (
    CV_GRID,
    fit_service_cv,
    isotonic_indices,
    log_errors,
    running_max_indices,
    simulated_p90_ms,
    traffic_weights,
)

BLOCK = ServerModel(1, 0.3, 8, 0.0, 1, ((1, 1.0), (8, 5.0)), overhead_ms=0.8)


def test_traffic_weights() -> None:
    assert traffic_weights("uniform", 4).tolist() == [0.25] * 4
    zipf = traffic_weights("zipf:1.0", 3)
    assert zipf == pytest.approx(np.array([1, 1 / 2, 1 / 3]) / (11 / 6))


@pytest.mark.parametrize("true_cv", [0.0, 1.0])
def test_the_fit_recovers_the_spread_that_made_the_measurements(true_cv: float) -> None:
    shares = traffic_weights("zipf:1.0", 8)
    truth = replace(BLOCK, service_cv=true_cv)
    points = [
        RatePoint(rate, rate, 1.0, simulated_p90_ms(truth, shares, rate, seed=99), 9.0, 0.0)
        for rate in (200.0, 400.0, 600.0)
    ]
    fitted = fit_service_cv(BLOCK, points, shares)
    assert fitted.service_cv == pytest.approx(true_cv, abs=0.25)
    assert replace(fitted, service_cv=0.0, service_cv_by_rate=()) == BLOCK  # nothing else changes


def test_nothing_to_fit_leaves_the_block() -> None:
    behind = RatePoint(500.0, 200.0, 1.0, 40.0, 90.0, 0.0)  # answered 40 % of its rate
    assert fit_service_cv(BLOCK, [behind], traffic_weights("uniform", 2)) == BLOCK


def test_the_per_level_spread_follows_the_load_and_never_falls() -> None:
    """Levels made with a spread that grows with the rate: the table recovers the growth
    (within the grid), is ordered by rate, and never falls even where a level is noisy."""
    shares = traffic_weights("zipf:1.0", 8)
    made = {200.0: 0.0, 400.0: 1.0, 600.0: 2.0}
    points = [
        RatePoint(rate, rate, 1.0, simulated_p90_ms(replace(BLOCK, service_cv=cv), shares, rate,
                                                    seed=99), 9.0, 0.0)
        for rate, cv in made.items()
    ]  # fmt: skip
    fitted = fit_service_cv(BLOCK, points, shares)
    rates = [rate for rate, _ in fitted.service_cv_by_rate]
    spreads = [cv for _, cv in fitted.service_cv_by_rate]
    assert rates == [200.0, 400.0, 600.0]
    assert spreads == pytest.approx([0.0, 1.0, 2.0], abs=0.5)
    # the simulations use the table at the server's rate
    assert fitted.cv_at(100.0) == spreads[0] and fitted.cv_at(900.0) == spreads[2]
    assert fitted.cv_at(300.0) == pytest.approx((spreads[0] + spreads[1]) / 2)


def test_one_far_off_level_is_outvoted_by_its_neighbours() -> None:
    """Five levels made with one spread, one of them (300 req/s) measured as if the host had
    slowed: the table stays at the others' spread above it instead of carrying the slow
    level's to every higher rate (what a running maximum of each level's own did)."""
    shares = traffic_weights("zipf:1.0", 8)
    calm = replace(BLOCK, service_cv=0.5)
    points = [
        RatePoint(rate, rate, 1.0, simulated_p90_ms(calm, shares, rate, seed=99), 9.0, 0.0)
        for rate in (200.0, 300.0, 400.0, 500.0, 600.0)
    ]
    slow = replace(BLOCK, service_cv=3.0)
    points[1] = RatePoint(300.0, 300.0, 1.0, simulated_p90_ms(slow, shares, 300.0, seed=99),
                          9.0, 0.0)  # fmt: skip
    spreads = [cv for _, cv in fit_service_cv(BLOCK, points, shares).service_cv_by_rate]
    assert spreads == sorted(spreads)
    assert spreads[2:] == pytest.approx([0.5, 0.5, 0.5], abs=0.25)
    own_best = running_max_indices(log_errors(BLOCK, points, shares))
    assert CV_GRID[own_best[-1]] >= 2.0  # the running maximum carried the slow level up


def test_the_isotonic_choice_is_the_least_error_non_decreasing_one() -> None:
    """Against brute force over every non-decreasing choice, on random error tables."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        grid, levels = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        errors = rng.random((grid, levels)).round(2).tolist()
        chosen = isotonic_indices(errors)
        assert chosen == sorted(chosen) and len(chosen) == levels

        best = min(
            _total(errors, choice)
            for choice in itertools.product(range(grid), repeat=levels)
            if list(choice) == sorted(choice)
        )
        assert _total(errors, tuple(chosen)) == pytest.approx(best)


def _total(errors: list[list[float]], choice: tuple[int, ...]) -> float:
    return sum(errors[c][i] for i, c in enumerate(choice))
