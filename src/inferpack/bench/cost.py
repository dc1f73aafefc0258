"""Cost arithmetic: what a measured throughput costs at an hourly instance price.

Pure functions; every input must be > 0 (a ValueError names the one that is not). Results
are not rounded: round for display only. (Published tables this reproduces truncated, not
rounded, their last digit: 1147.46 img/s at 0.489 USD/h is 844.756..., printed as 844.7.)
"""

from __future__ import annotations

import math

SECONDS_PER_HOUR = 3600.0


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def usd_per_million(items_per_s: float, price_usd_per_hour: float) -> float:
    """USD to process one million items.

    usd_per_million = price_usd_per_hour / (items_per_s * 3600) * 1e6
    """
    _require_positive(items_per_s=items_per_s, price_usd_per_hour=price_usd_per_hour)
    return price_usd_per_hour / (items_per_s * SECONDS_PER_HOUR) * 1e6


def inferences_per_0_0001_usd(items_per_s: float, price_usd_per_hour: float) -> float:
    """Items processed for 0.0001 USD (the "cost performance" of the seed articles).

    inferences_per_0_0001_usd = items_per_s * 3600 * 0.0001 / price_usd_per_hour
                              = items_per_s * 0.36 / price_usd_per_hour
    """
    _require_positive(items_per_s=items_per_s, price_usd_per_hour=price_usd_per_hour)
    return items_per_s * 0.36 / price_usd_per_hour


def usd_per_model_hour(price_usd_per_hour: float, models_per_instance: float) -> float:
    """Hourly cost of one model when ``models_per_instance`` models share one instance.

    usd_per_model_hour = price_usd_per_hour / models_per_instance
    """
    _require_positive(
        price_usd_per_hour=price_usd_per_hour, models_per_instance=models_per_instance
    )
    return price_usd_per_hour / models_per_instance


def cost_figures(items_per_s: float, price_usd_per_hour: float) -> dict[str, float]:
    """The cost columns of a bench report, unrounded.

    {"price_usd_per_hour": price_usd_per_hour,
     "usd_per_million": price_usd_per_hour / (items_per_s * 3600) * 1e6,
     "inferences_per_0_0001_usd": items_per_s * 0.36 / price_usd_per_hour}
    """
    return {
        "price_usd_per_hour": float(price_usd_per_hour),
        "usd_per_million": usd_per_million(items_per_s, price_usd_per_hour),
        "inferences_per_0_0001_usd": inferences_per_0_0001_usd(items_per_s, price_usd_per_hour),
    }
