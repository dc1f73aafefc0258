"""Per-model request rates over a simulated run: the plan's, a demand CSV, or a trace.

A trace CSV (``t_s,model,rps`` steps) is read by :func:`inferpack.plan.trace.read_trace`,
which ``loadtest --trace`` shares.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from inferpack.plan.formats import Demand, Plan
from inferpack.plan.trace import TRACE_COLUMNS, read_trace
from inferpack.simulate.fleet import RateSteps

__all__ = ["TRACE_COLUMNS", "from_demand", "from_plan", "read_trace", "steady"]


def steady(rates: dict[str, float], duration_s: float) -> RateSteps:
    return {name: [(0.0, duration_s, rps)] for name, rps in rates.items()}


def from_plan(plan: Plan, duration_s: float, scale: float = 1.0) -> RateSteps:
    """Each model at the rate the plan placed (summed over its replicas)."""
    rates: dict[str, float] = defaultdict(float)
    for server in plan.servers:
        for share in server.models:
            rates[share.name] += share.rps * scale
    return steady(dict(rates), duration_s)


def from_demand(demand: Iterable[Demand], duration_s: float, scale: float = 1.0) -> RateSteps:
    return steady({d.model: d.rps * scale for d in demand}, duration_s)
