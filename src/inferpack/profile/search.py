"""The rate search: the highest open-loop rate whose p90 meets the SLO. Pure: the
measurement is a function handed in, so the search is tested without a server.

    if start passes:                         # geometric: bracket the boundary fast
        good = start, then good * growth ... (at most max) while they pass; bad = the first
        that fails (none: max passed, stop)
    else:
        bad = start, then bad / growth ... until one passes (good), at most
        MAX_DOWN_LEVELS times (none passed: capacity 0)
    repeat steps times, while bad - good > MIN_GAP_SHARE * bad:
        mid = (good + bad) / 2               # bisect: narrow the boundary
        mid passes ? good = mid : bad = mid
    capacity = good                          # 0 when not even the lowest rate passed
    for share in fill_shares:                # where plans run: 30-90 % of the capacity
        measure share * capacity unless a measured rate lies within FILL_GAP_SHARE of it

A rate passes when its p90 is within the SLO, under ``max_error_pct`` of its requests
failed, and the server answered at least ``min_achieved_share`` of the offered rate (an
open-loop generator keeps sending whatever the server does, so an overloaded server shows
as a shortfall before its latency settles), less three standard deviations of a Poisson
count over ``measured_s`` (at 100 req/s over 6 s the count alone varies by ±4 %, so a
short level would otherwise fail by chance). Trade-off: the geometric phase costs
|log2(capacity / start)| levels, and each bisection step halves the bracket; noise near the
boundary can make a rate pass where a lower one failed, and no rate is measured twice, yet
by construction every rate measured above ``capacity`` failed and ``capacity`` passed.

The fill levels change nothing of the above (a fill level that misses the SLO below the
capacity is kept as measured); they are there for the profile's latency curve and the
service spread fitted to it (fit.py): the search's levels land where its steps happen to,
e.g. 200, 400, 800 req/s and nothing between, and a plan packs servers to 60-90 % of
capacity, where the spread would otherwise be interpolated across the widest gap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from inferpack.plan.formats import RatePoint

# Bisection stops once the bracket is within 1 % of the failing rate: a level of a few
# seconds does not resolve rates closer than that (its p90 moves more with noise).
MIN_GAP_SHARE = 0.01
# A fill level is skipped when a measured rate is within this share of it.
FILL_GAP_SHARE = 0.1
# Rates tried below a failing start_rps before giving up: down to start_rps / 2**10.
MAX_DOWN_LEVELS = 10
# Standard deviations of a Poisson count allowed below the achieved-rate threshold: a level
# that keeps up fails by chance about once in 700.
POISSON_SIGMAS = 3.0

Measure = Callable[[float], RatePoint]
Report = Callable[[RatePoint, str | None], None]


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """What counts as meeting the SLO, and where and how finely to look."""

    slo_p90_ms: float
    start_rps: float = 10.0
    max_rps: float = 100_000.0
    steps: int = 4  # bisection steps after the first failing rate
    growth: float = 2.0  # factor between rates of the geometric phase
    max_error_pct: float = 1.0  # a rate fails at this share of failed requests or more
    min_achieved_share: float = 0.9  # ... or when the server answered less of the offered rate
    measured_s: float = math.inf  # seconds measured per rate: the Poisson slack of the above
    fill_shares: tuple[float, ...] = ()  # shares of the capacity measured after the search

    def problems(self) -> list[str]:
        """Every invalid field at once (empty when the config is usable)."""
        found = []
        if not self.slo_p90_ms > 0:
            found.append(f"slo_p90_ms must be > 0 (got {self.slo_p90_ms})")
        if not 0 < self.start_rps <= self.max_rps:
            found.append(f"need 0 < start_rps <= max_rps (got {self.start_rps}, {self.max_rps})")
        if self.steps < 0:
            found.append(f"steps must be >= 0 (got {self.steps})")
        if not self.growth > 1:
            found.append(f"growth must be > 1 (got {self.growth})")
        if any(not 0 < share <= 1 for share in self.fill_shares):
            found.append(f"fill levels must be shares in (0, 1] (got {list(self.fill_shares)})")
        return found


@dataclass(frozen=True, slots=True)
class SearchResult:
    capacity_rps: float  # highest measured rate that passed; 0 if none did
    failed_rps: float | None  # lowest measured rate that failed; None if max_rps passed
    points: tuple[RatePoint, ...]  # every measured level, by rate

    @property
    def answered_capacity_rps(self) -> float:
        """The capacity a profile states: the passing rate, never above what the server
        answered at that level (a pass allows Poisson slack below the offered rate)."""
        at = [p.sustained_rps for p in self.points if p.rate_rps == self.capacity_rps]
        return min([self.capacity_rps, *at])


def failure(point: RatePoint, config: SearchConfig) -> str | None:
    """Why ``point`` misses the SLO, or None when it meets it."""
    if point.error_pct >= config.max_error_pct:
        return f"errors {point.error_pct:.2f} % >= {config.max_error_pct:g} %"
    if not point.p90_ms <= config.slo_p90_ms:  # also a NaN p90
        return f"p90 {point.p90_ms:.1f} ms > SLO {config.slo_p90_ms:g} ms"
    slack_rps = POISSON_SIGMAS * math.sqrt(point.rate_rps / config.measured_s)
    if point.achieved_rps < config.min_achieved_share * point.rate_rps - slack_rps:
        share = point.achieved_rps / point.rate_rps
        return f"answered {share:.0%} of the offered rate"
    return None


def search_capacity(
    measure: Measure, config: SearchConfig, report: Report | None = None
) -> SearchResult:
    """Measure rates as the module docstring says; ``report`` sees each point and its
    verdict (None: passed) as soon as it is measured."""
    points: list[RatePoint] = []

    def passes(rate: float) -> bool:
        point = measure(rate)
        points.append(point)
        why = failure(point, config)
        if report is not None:
            report(point, why)
        return why is None

    good, bad = _bracket(passes, config)
    if bad is not None and good > 0:
        good, bad = _bisect(passes, good, bad, config.steps)
    for share in sorted(config.fill_shares) if good > 0 else ():
        rate = share * good
        if all(abs(p.rate_rps - rate) > FILL_GAP_SHARE * rate for p in points):
            passes(rate)  # measured and reported; the capacity stays as searched
    return SearchResult(good, bad, tuple(sorted(points, key=lambda p: p.rate_rps)))


def _bracket(passes: Callable[[float], bool], config: SearchConfig) -> tuple[float, float | None]:
    """(highest passing rate or 0, lowest failing rate or None) of the geometric phase."""
    rate = min(config.start_rps, config.max_rps)
    if passes(rate):
        good = rate
        while good < config.max_rps:
            rate = min(good * config.growth, config.max_rps)
            if not passes(rate):
                return good, rate
            good = rate
        return good, None
    bad = rate
    for _ in range(MAX_DOWN_LEVELS):
        rate = bad / config.growth
        if passes(rate):
            return rate, bad
        bad = rate
    return 0.0, bad


def _bisect(
    passes: Callable[[float], bool], good: float, bad: float, steps: int
) -> tuple[float, float]:
    for _ in range(steps):
        if bad - good <= MIN_GAP_SHARE * bad:
            break
        middle = (good + bad) / 2
        if passes(middle):
            good = middle
        else:
            bad = middle
    return good, bad
