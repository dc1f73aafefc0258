"""Per-model request rates over a simulated run: the plan's, a demand CSV, or a trace.

A trace CSV has the header ``t_s,model,rps``: from ``t_s`` on, ``model`` is sent ``rps``
requests per second, until its next row or the end of the run (before its first row, 0).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from inferpack.errors import ConfigError
from inferpack.plan.formats import Demand, Plan
from inferpack.simulate.fleet import RateSteps

TRACE_COLUMNS = ("t_s", "model", "rps")


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


def read_trace(path: Path, duration_s: float, scale: float = 1.0) -> RateSteps:
    """The trace CSV as rate steps over [0, duration_s); every bad row reported at once."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise ConfigError([f"cannot read trace {path}: {error.strerror}"]) from None
    header = tuple(h.strip() for h in next(csv.reader(lines[:1]), []))
    if header[:3] != TRACE_COLUMNS:
        raise ConfigError([f"{path}: the header must be t_s,model,rps (got {','.join(header)})"])
    changes: dict[str, list[tuple[float, float]]] = defaultdict(list)
    problems = []
    for line, row in enumerate(csv.reader(lines[1:]), start=2):
        if len(row) < 3:
            problems.append(f"{path}:{line}: expected t_s,model,rps")
            continue
        try:
            t_s, rps = float(row[0]), float(row[2])
        except ValueError:
            problems.append(
                f"{path}:{line}: t_s and rps must be numbers (got {row[0]!r}, {row[2]!r})"
            )
            continue
        if not (math.isfinite(t_s) and t_s >= 0 and math.isfinite(rps) and rps >= 0):
            problems.append(f"{path}:{line}: t_s and rps must be >= 0")
            continue
        changes[row[1].strip()].append((t_s, rps * scale))
    if problems:
        raise ConfigError(problems)
    steps: dict[str, list[tuple[float, float, float]]] = {}
    for model, points in changes.items():
        points.sort()
        ends = [t for t, _ in points[1:]] + [duration_s]
        steps[model] = [
            (t, min(end, duration_s), rps)
            for (t, rps), end in zip(points, ends, strict=True)
            if t < duration_s and end > t
        ]
    return steps
