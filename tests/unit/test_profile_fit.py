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
    assert replace(fitted, service_cv=0.0) == BLOCK  # nothing else changes


def test_nothing_to_fit_leaves_the_block() -> None:
    behind = RatePoint(500.0, 200.0, 1.0, 40.0, 90.0, 0.0)  # answered 40 % of its rate
    assert fit_service_cv(BLOCK, [behind], traffic_weights("uniform", 2)) == BLOCK
