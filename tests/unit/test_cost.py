"""Cost arithmetic reproduces the figures published by the seed articles."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal

import pytest

from inferpack.bench.cost import (
    cost_figures,
    inferences_per_0_0001_usd,
    usd_per_million,
    usd_per_model_hour,
)


def truncate(value: float, digits: int) -> float:
    """Cut (not round) to ``digits`` decimals: how the published tables printed figures."""
    return float(Decimal(repr(value)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_DOWN))


def test_pose_batch_1_cost_performance() -> None:
    # 516.8 img/s on inf1.xlarge at 0.308 USD/h (Tokyo) -> 604.05 images per 0.0001 USD.
    value = inferences_per_0_0001_usd(516.8, 0.308)
    assert round(value, 2) == 604.05
    assert truncate(value, 2) == 604.05


def test_pose_best_throughput_cost_performance() -> None:
    assert round(inferences_per_0_0001_usd(1011.9, 0.308), 1) == 1182.7


def test_inf1_2xlarge_cost_performance_is_truncated_in_the_article() -> None:
    value = inferences_per_0_0001_usd(1147.46, 0.489)  # 844.7558...
    assert value == pytest.approx(844.7558, abs=1e-4)
    assert round(value, 1) == 844.8  # rounding would print 844.8 ...
    assert truncate(value, 1) == 844.7  # ... the article printed 844.7: it truncated


@pytest.mark.parametrize(
    ("price_usd_per_hour", "models", "published"),
    [
        (0.362, 24, 0.015),  # inf1.2xlarge
        (0.526, 18, 0.029),  # g4dn.xlarge
        (0.228, 11, 0.020),  # inf1.xlarge: 0.02073, round() gives 0.021
        (1.180, 76, 0.015),  # inf1.6xlarge: 0.01553, round() gives 0.016
        (3.912, 72, 0.054),  # g4dn.12xlarge
    ],
)
def test_cost_per_model_hour_table(
    price_usd_per_hour: float, models: int, published: float
) -> None:
    # The article truncated to 3 decimals (two rows differ from round(x, 3)).
    value = usd_per_model_hour(price_usd_per_hour, models)
    assert value == pytest.approx(price_usd_per_hour / models)
    assert truncate(value, 3) == published


def test_rounding_differs_from_the_table_where_expected() -> None:
    assert round(usd_per_model_hour(0.228, 11), 3) == 0.021
    assert round(usd_per_model_hour(1.18, 76), 3) == 0.016


def test_fleet_of_40_inf1_6xlarge() -> None:
    fleet_usd_per_hour = 40 * 1.18
    assert fleet_usd_per_hour == pytest.approx(47.2)
    # 3,040 models over the fleet cost the same per model-hour as 76 on one instance.
    assert usd_per_model_hour(fleet_usd_per_hour, 3040) == pytest.approx(
        usd_per_model_hour(1.18, 76)
    )


def test_usd_per_million_simple_case() -> None:
    # 1000 items/s = 3.6 M items/h; at 3.6 USD/h a million items cost 1 USD.
    assert usd_per_million(1000.0, 3.6) == pytest.approx(1.0)
    assert usd_per_million(1.0, 0.36) == pytest.approx(100.0)


def test_cost_figures() -> None:
    figures = cost_figures(516.8, 0.308)
    assert set(figures) == {"price_usd_per_hour", "usd_per_million", "inferences_per_0_0001_usd"}
    assert figures["price_usd_per_hour"] == 0.308
    assert figures["usd_per_million"] == pytest.approx(0.308 / (516.8 * 3600) * 1e6)
    assert round(figures["inferences_per_0_0001_usd"], 2) == 604.05
    # The two figures are reciprocal views of one price: x per 0.0001 USD <-> USD per 1e6.
    assert figures["usd_per_million"] * figures["inferences_per_0_0001_usd"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: usd_per_million(0.0, 1.0), "items_per_s"),
        (lambda: usd_per_million(10.0, -1.0), "price_usd_per_hour"),
        (lambda: inferences_per_0_0001_usd(-5.0, 1.0), "items_per_s"),
        (lambda: inferences_per_0_0001_usd(5.0, 0.0), "price_usd_per_hour"),
        (lambda: usd_per_model_hour(1.0, 0), "models_per_instance"),
        (lambda: usd_per_model_hour(0.0, 3), "price_usd_per_hour"),
        (lambda: cost_figures(float("nan"), 1.0), "items_per_s"),
        (lambda: cost_figures(1.0, float("inf")), "price_usd_per_hour"),
    ],
)
def test_non_positive_inputs_are_refused(call: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()
