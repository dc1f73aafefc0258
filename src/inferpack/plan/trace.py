"""A demand trace: per-model request rates that change over time, as steps.

A trace CSV has the header ``t_s,model,rps``: from ``t_s`` on, ``model`` is sent ``rps``
requests per second, until its next row or the end of the run (before its first row, 0).
``simulate --trace`` replays it on a simulated fleet, ``loadtest --trace`` on a real one.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from inferpack.errors import ConfigError

TRACE_COLUMNS = ("t_s", "model", "rps")
# model -> [(start s, end s, rps)], steps in time order
Steps = Mapping[str, Sequence[tuple[float, float, float]]]


def read_trace(path: Path, duration_s: float, scale: float = 1.0) -> Steps:
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
        points.sort(key=lambda point: point[0])  # stable: at equal t, the later row wins
        ends = [t for t, _ in points[1:]] + [duration_s]
        steps[model] = [
            (t, min(end, duration_s), rps)
            for (t, rps), end in zip(points, ends, strict=True)
            if t < duration_s and end > t
        ]
    return steps


def segments(
    steps: Steps, models: Sequence[str], duration_s: float
) -> list[tuple[float, float, tuple[float, ...]]]:
    """The trace as consecutive (start s, end s, each model's rps in ``models`` order)
    spans over [0, duration_s): one span between every two instants where a rate changes."""
    cuts = {0.0, duration_s}
    for spans in steps.values():
        for start, end, _ in spans:
            cuts.update(t for t in (start, end) if 0.0 <= t <= duration_s)
    edges = sorted(cuts)
    result = []
    for start, end in itertools.pairwise(edges):
        middle = (start + end) / 2
        rates = tuple(
            next((rps for s, e, rps in steps.get(model, ()) if s <= middle < e), 0.0)
            for model in models
        )
        result.append((start, end, rates))
    return result
