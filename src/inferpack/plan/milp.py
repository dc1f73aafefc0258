"""The two HiGHS models: the aggregated bound and the exact assignment.

**Aggregated bound** (any size). Servers of one type are interchangeable, so count them:

    minimise   sum_t price_t * n_t                       n_t integer >= 0
    subject to sum_t z_mt = 1                 for every model m    z_mt in [0, 1]
               sum_m z_mt * memory_mt * r_mt <= n_t     for every type t
               sum_m z_mt * compute_mt       <= n_t
               sum_m z_mt * slots_mt * r_mt  <= n_t

where z_mt is the fraction of model m's demand served on type t and r_mt = max(1,
compute_mt) counts the replicas a hot model needs. Any real plan gives such (n, z), so
the optimum (or HiGHS's dual bound when the time limit stops it) is a lower bound on
every plan. It is tight when models are small next to a server; its z says which type
each model should go to.

**Exact assignment** (small instances). Candidate servers b of each type, y_b open,
x_mb = model m has a replica on b, f_mb = the share of m's rps b serves:

    minimise   sum_b price_b * y_b
    subject to sum_b f_mb = 1;  f_mb <= x_mb
               sum_m x_mb * memory_m <= y_b;  sum_m f_mb * compute_m <= y_b;
               sum_m x_mb * slots_m <= y_b;   y_b >= y_(b+1) within a type (symmetry)

Exact when the candidate servers per type are as many as the warm start's cost could buy.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferpack.plan.packing import Bin
from inferpack.plan.problem import Problem

# Variables the exact model may have before the planner uses the bound + packing instead.
EXACT_MAX_ASSIGNMENTS = 6_000
INF = 1e30


@dataclass(frozen=True)
class MilpResult:
    status: str
    objective: float | None
    bound: float
    values: np.ndarray | None


def _highs() -> Any:
    import highspy

    with _quiet_c_stdout():
        solver = highspy.Highs()  # type: ignore[no-untyped-call]
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("threads", max(1, min(4, os.cpu_count() or 1)))
    return solver


@contextlib.contextmanager
def _quiet_c_stdout() -> Iterator[None]:
    """HiGHS's C++ core prints a banner on its first construction, straight to file
    descriptor 1: send that descriptor to /dev/null meanwhile (C buffers flushed first)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 1)
            try:
                yield
            finally:
                libc.fflush(None)
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def _solve(
    costs: np.ndarray,
    *,
    bounds: tuple[np.ndarray, np.ndarray],
    rows: tuple[list[int], list[int], list[float]],
    row_bounds: tuple[np.ndarray, np.ndarray],
    integer: np.ndarray,
    time_limit_s: float,
    start: np.ndarray | None = None,
) -> MilpResult:
    import highspy

    solver = _highs()
    solver.setOptionValue("time_limit", max(0.1, time_limit_s))
    solver.setOptionValue("mip_rel_gap", 1e-6)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(costs), len(row_bounds[0])
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = costs, bounds[0], bounds[1]
    lp.row_lower_, lp.row_upper_ = row_bounds
    r, c, v = (np.asarray(a) for a in rows)
    order = np.lexsort((r, c))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(c[order], np.arange(len(costs) + 1)).astype(np.int32)
    lp.a_matrix_.index_ = r[order].astype(np.int32)
    lp.a_matrix_.value_ = v[order].astype(np.float64)
    lp.integrality_ = [
        highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous
        for flag in integer
    ]
    solver.passModel(lp)
    if start is not None:
        solution = highspy.HighsSolution()
        solution.col_value = list(start)
        solution.value_valid = True
        solver.setSolution(solution)
    solver.run()
    info = solver.getInfo()
    status = solver.modelStatusToString(solver.getModelStatus())
    has_value = info.primal_solution_status == 2  # kSolutionStatusFeasible
    values = np.array(solver.getSolution().col_value) if has_value else None
    objective = float(info.objective_function_value) if has_value else None
    if integer.any():
        bound = float(info.mip_dual_bound)
    else:  # an LP: its optimum is the bound, anything short of optimal proves nothing
        bound = objective if status == "Optimal" and objective is not None else 0.0
    if not math.isfinite(bound) or abs(bound) >= INF:
        bound = 0.0
    return MilpResult(status, objective, bound, values)


def aggregated_bound(problem: Problem, time_limit_s: float) -> tuple[MilpResult, np.ndarray]:
    """Solve the aggregated model; returns the result and z as an [m, t] array.

    The LP relaxation (server counts fractional) comes first: polynomial (0.3 s at 3,000
    models, 8-14 s at 30,000 on a 2-core VM). If it does not finish within ``time_limit_s``
    the plan keeps its time limit with :func:`instant_bound` and no guidance (z = 0). The
    MILP with integer counts then runs in what is left; the larger bound is kept."""
    started = time.perf_counter()
    relaxed, z = _aggregated(problem, time_limit_s, integer_counts=False)
    if relaxed.status != "Optimal":  # out of time: a bound that costs nothing, no guidance
        return MilpResult(relaxed.status, None, instant_bound(problem), None), np.zeros_like(z)
    left_s = time_limit_s - (time.perf_counter() - started)
    if left_s < 0.2:
        return relaxed, z
    result, z_int = _aggregated(problem, left_s, integer_counts=True)
    if result.values is None:
        return MilpResult(
            relaxed.status, relaxed.objective, max(relaxed.bound, result.bound), relaxed.values
        ), z
    return MilpResult(
        result.status, result.objective, max(relaxed.bound, result.bound), result.values
    ), z_int


def instant_bound(problem: Problem) -> float:
    """A lower bound in one pass, for when the LP does not finish in time: any server's
    price is at least its price times its use of each dimension, so for each dimension d,
    sum over models of the cheapest price x size on d is a bound; the largest of the
    three is kept. (Memory and slots count max(1, compute share) copies, as the LP does.)"""
    prices = problem.prices()[None, :]
    copies = np.maximum(1.0, problem.compute)
    best = 0.0
    for sizes in (problem.memory * copies, problem.compute, problem.slots * copies):
        cost = np.where(problem.usable, prices * sizes, np.inf)
        best = max(best, float(cost.min(axis=1).sum()))
    return best


def _aggregated(
    problem: Problem, time_limit_s: float, integer_counts: bool
) -> tuple[MilpResult, np.ndarray]:
    models, types = len(problem.models), len(problem.types)
    pairs = np.argwhere(problem.usable)
    z_count = len(pairs)
    replicas = np.maximum(1.0, problem.compute)
    costs = np.concatenate([np.zeros(z_count), problem.prices()])
    lower = np.zeros(z_count + types)
    upper = np.concatenate([np.ones(z_count), np.full(types, INF)])
    rows: tuple[list[int], list[int], list[float]] = ([], [], [])
    for column, (m, t) in enumerate(pairs):
        entries = (
            (m, 1.0),
            (models + 3 * t, problem.memory[m, t] * replicas[m, t]),
            (models + 3 * t + 1, problem.compute[m, t]),
            (models + 3 * t + 2, problem.slots[m, t] * replicas[m, t]),
        )
        for row, value in entries:
            if value:
                rows[0].append(int(row))
                rows[1].append(column)
                rows[2].append(float(value))
    for t in range(types):
        for k in range(3):
            rows[0].append(models + 3 * t + k)
            rows[1].append(z_count + t)
            rows[2].append(-1.0)
    row_lower = np.concatenate([np.ones(models), np.full(3 * types, -INF)])
    row_upper = np.concatenate([np.ones(models), np.zeros(3 * types)])
    integer = np.concatenate([np.zeros(z_count, bool), np.full(types, integer_counts)])
    result = _solve(
        costs,
        bounds=(lower, upper),
        rows=rows,
        row_bounds=(row_lower, row_upper),
        integer=integer,
        time_limit_s=time_limit_s,
    )
    z = np.zeros((models, types))
    if result.values is not None:
        z[pairs[:, 0], pairs[:, 1]] = result.values[:z_count]
    return result, z


def exact_size(problem: Problem, candidates: list[int]) -> int:
    """x variables the exact model would have for ``candidates[t]`` servers of type t."""
    return int(sum(problem.usable[:, t].sum() * k for t, k in enumerate(candidates)))


def exact_assignment(
    problem: Problem, candidates: list[int], start: list[Bin], time_limit_s: float
) -> tuple[MilpResult, list[Bin]]:
    """The exact model over ``candidates[t]`` servers per type, warm-started by ``start``."""
    servers = [t for t, k in enumerate(candidates) for _ in range(k)]
    slots = [
        (int(m), b) for b, t in enumerate(servers) for m in np.flatnonzero(problem.usable[:, t])
    ]
    n_b, n_x = len(servers), len(slots)
    models = len(problem.models)
    prices = problem.prices()
    # columns: y_b | x_s | f_s ; rows: demand (m) | link (s) | 3 per server | symmetry
    costs = np.concatenate([prices[servers], np.zeros(2 * n_x)])
    lower = np.zeros(n_b + 2 * n_x)
    upper = np.ones(n_b + 2 * n_x)
    rows: tuple[list[int], list[int], list[float]] = ([], [], [])

    def add(row: int, column: int, value: float) -> None:
        if value:
            rows[0].append(row)
            rows[1].append(column)
            rows[2].append(value)

    link0, server0 = models, models + n_x
    for s, (m, b) in enumerate(slots):
        t = servers[b]
        x, f = n_b + s, n_b + n_x + s
        add(int(m), f, 1.0)
        add(link0 + s, f, 1.0)
        add(link0 + s, x, -1.0)
        add(server0 + 3 * b, x, float(problem.memory[m, t]))
        add(server0 + 3 * b + 1, f, float(problem.compute[m, t]))
        add(server0 + 3 * b + 2, x, float(problem.slots[m, t]))
    for b in range(n_b):
        for k in range(3):
            add(server0 + 3 * b + k, b, -1.0)
    sym0 = server0 + 3 * n_b
    symmetry = [b for b in range(n_b - 1) if servers[b] == servers[b + 1]]
    for i, b in enumerate(symmetry):
        add(sym0 + i, b, 1.0)
        add(sym0 + i, b + 1, -1.0)
    n_rows = sym0 + len(symmetry)
    row_lower = np.concatenate([np.ones(models), np.full(n_rows - models, -INF)])
    row_upper = np.concatenate([np.ones(models), np.zeros(3 * n_b + n_x)])
    row_lower[sym0:] = 0.0
    row_upper = np.concatenate([row_upper, np.full(len(symmetry), INF)])
    integer = np.concatenate([np.ones(n_b + n_x, bool), np.zeros(n_x, bool)])
    warm = _warm_start(start, servers, slots, n_b, n_x)
    result = _solve(
        costs,
        bounds=(lower, upper),
        rows=rows,
        row_bounds=(row_lower, row_upper),
        integer=integer,
        time_limit_s=time_limit_s,
        start=warm,
    )
    if result.values is None:
        return result, start
    return result, _bins_from_values(problem, result.values, servers, slots)


def _warm_start(
    start: list[Bin], servers: list[int], slots: list[tuple[int, int]], n_b: int, n_x: int
) -> np.ndarray | None:
    """The start plan as a column vector, servers of each type filled in order."""
    values = np.zeros(n_b + 2 * n_x)
    index = {slot: s for s, slot in enumerate(slots)}
    free = {t: [b for b, bt in enumerate(servers) if bt == t] for t in set(servers)}
    for server in sorted(start, key=lambda b: b.type_index):
        if not free.get(server.type_index):
            return None
        b = free[server.type_index].pop(0)
        values[b] = 1.0
        for m, fraction in server.members.items():
            s = index[(m, b)]
            values[n_b + s] = 1.0
            values[n_b + n_x + s] = fraction
    return values


def _bins_from_values(
    problem: Problem, values: np.ndarray, servers: list[int], slots: list[tuple[int, int]]
) -> list[Bin]:
    from inferpack.plan.packing import bin_usage

    n_b, n_x = len(servers), len(slots)
    bins = {b: Bin(servers[b]) for b in range(n_b) if values[b] > 0.5}
    for s, (m, b) in enumerate(slots):
        share = float(values[n_b + n_x + s])
        if b in bins and values[n_b + s] > 0.5 and share > 1e-9:
            bins[b].members[int(m)] = share
    result = [b for b in bins.values() if b.members]
    _normalise_shares(result)
    for server in result:
        server.used = bin_usage(problem, server.members, server.type_index)
    return result


def _normalise_shares(bins: list[Bin]) -> None:
    """Shares of each model add up to exactly one (solver tolerances aside)."""
    totals: dict[int, float] = {}
    for server in bins:
        for m, share in server.members.items():
            totals[m] = totals.get(m, 0.0) + share
    for server in bins:
        for m in server.members:
            server.members[m] /= totals[m]
