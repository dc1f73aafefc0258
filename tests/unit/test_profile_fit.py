"""The profile's fitted service-time spread: recovered from p90s that a known spread made."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from inferpack.plan.formats import RatePoint
from inferpack.plan.server_model import ServerModel
from inferpack.profile.fit import fit_service_cv, simulated_p90_ms, traffic_weights

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
    noisy = RatePoint(700.0, 700.0, 1.0, points[0].p90_ms, 9.0, 0.0)  # as fast as 200 req/s
    fitted = fit_service_cv(BLOCK, [*points, noisy], shares)
    rates = [rate for rate, _ in fitted.service_cv_by_rate]
    spreads = [cv for _, cv in fitted.service_cv_by_rate]
    assert rates == [200.0, 400.0, 600.0, 700.0]
    assert spreads == sorted(spreads)
    assert [spreads[0], spreads[1], spreads[2]] == pytest.approx([0.0, 1.0, 2.0], abs=0.5)
    assert spreads[3] == spreads[2]  # a lighter-looking level cannot lower the spread
    # the simulations use the table at the server's rate
    assert fitted.cv_at(100.0) == spreads[0] and fitted.cv_at(900.0) == spreads[3]
    assert fitted.cv_at(300.0) == pytest.approx((spreads[0] + spreads[1]) / 2)
