"""The tail constraint: no server planned with a predicted p90 above the SLO.

Capacity shares bound a server's *mean* load; its p90 depends on how that load is split
(batching is per model: 40 models at 1/40 of a rate batch far worse than one). Where every
kind on a server has a profile ``server`` block, the server is simulated
(:mod:`inferpack.queueing.server`, with its models' own rates) and:

    while some server's simulated p90 > SLO:
        if it holds several replicas: move out the fewest highest-rate ones that bring its
            p90 under the SLO (bisection on how many) onto a new server of its type
        else: split the replica's rate over two servers
    a replica that misses the SLO alone at a tiny rate is left, with a note

With ``slowdown`` s > 1 (``plan --slowdown-margin``) every server is checked on a host that
computes s times slower than profiled (ServerModel.slowed). Each server kept is then
stated by two numbers: its p90 as profiled, and its tolerated slowdown: the largest factor
(at most MAX_SLOWDOWN, to 5 %) by which its batches and frontend may slow before its p90
passes the SLO. Near capacity that factor is small: p90 grows steeply with utilisation, so
a host 10 % slower can double it (the [11] validation's eighth run, docs/plan.md).

The aggregated bound ignores this constraint, so it stays a valid lower bound; the gap
then includes what the tail costs. Deterministic: every simulation uses the same seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from inferpack.plan.packing import Bin, bin_usage
from inferpack.plan.problem import Problem
from inferpack.plan.server_model import ServerModel, shared_server
from inferpack.queueing.server import poisson_arrivals, simulate_server
from inferpack.queueing.service import BatchPolicy, ServiceCurve, SimModel

# Requests simulated per replication, and at least this long.
SIM_REQUESTS = 6_000
MIN_SIM_S = 20.0
SEED = 20261206
# Replications run until the standard error of their p90s is within this share of their
# mean (at least MIN_REPLICATIONS, at most MAX_REPLICATIONS). At 90 % of capacity one 20 s
# replication's p90 lies anywhere in 0.76-1.32 of the 300 s one (8 seeds, the [11]
# validation's 8-model server); at 30 % within 2 %. See server_p90_ms.
REL_SE = 0.04
MIN_REPLICATIONS = 2
MAX_REPLICATIONS = 16
# A replica is not split below this share of its model's rate.
MIN_FRACTION = 1 / 64
# The tolerated slowdown is searched in [1 / MAX_SLOWDOWN, MAX_SLOWDOWN], to this ratio,
# each factor simulated once (the same seed at every factor, so p90 grows with it): the
# replications' precision would cost the planner 5x its time at the seeds' scale.
MAX_SLOWDOWN = 4.0
SLOWDOWN_STEP = 1.05


@dataclass(frozen=True)
class TailCheck:
    """What the tail constraint measured of a server it kept."""

    p90_ms: float  # simulated with the profiles as measured
    tolerated_slowdown: float | None  # None: not searched (time limit)


def _block(problem: Problem, m: int, t: int, models: int) -> ServerModel | None:
    """The server block of model m's kind on type t, measured with at least ``models``
    models where the profile has counts (plan/counts.py)."""
    family = problem.families.get((problem.models[m].kind, problem.types[t].name))
    return None if family is None else family.at(models).server


def simulated_p90_ms(
    problem: Problem,
    members: dict[int, float],
    t: int,
    slowdown: float = 1.0,
    replications: int | None = None,
) -> float | None:
    """p90 of one server holding ``members`` (model -> share of its rate), its host
    ``slowdown`` times slower than profiled, from at most ``replications`` (default
    MAX_REPLICATIONS); None when a kind on it has no server block."""
    found = {m: _block(problem, m, t, len(members)) for m in members}
    if not members or any(b is None for b in found.values()):
        return None
    blocks = {m: b.slowed(slowdown) for m, b in found.items() if b is not None}
    server = shared_server(blocks.values())
    rates = [problem.models[m].rps * share for m, share in members.items()]
    models = [sim_model(str(m), rate, blocks[m]) for (m, rate) in zip(members, rates, strict=True)]
    duration_s = max(MIN_SIM_S, SIM_REQUESTS / max(sum(rates), 1e-9))
    p90 = server_p90_ms(server, models, rates, duration_s, SEED, replications=replications)
    if p90 is None:
        alone_ms = 1e3 * models[0].service(1) + server.frontend_ms + server.overhead_ms
        return round(alone_ms, 3)
    return round(p90, 3)


def server_p90_ms(
    server: ServerModel,
    models: list[SimModel],
    rates: list[float],
    duration_s: float,
    seed: int,
    *,
    replications: int | None = None,
) -> float | None:
    """p90 (ms, with the server's overhead) of ``models`` at Poisson ``rates`` on one server
    with ``server``'s workers, frontend and service spread; None when nothing arrives.

    Independent replications of ``duration_s`` (seeds ``seed``, ``seed + 1``, ...) run until
    their p90s agree (REL_SE); the answer is the p90 of all of them pooled. Near capacity a
    queue's busy periods are long, so one replication's p90 is noisy exactly where plans
    run (a planned 48.9 ms where 300 s of the same server give 27.5), while a lightly loaded
    server stops after MIN_REPLICATIONS: the work goes where the noise is."""
    latencies: list[np.ndarray] = []
    p90s: list[float] = []
    service_cv = server.cv_at(sum(rates))
    for replication in range(MAX_REPLICATIONS if replications is None else replications):
        rng = np.random.default_rng(seed + replication)
        times, index = poisson_arrivals(rates, duration_s, rng)
        if len(times) == 0:
            return None
        result = simulate_server(
            models,
            times,
            index,
            server.workers,
            server.frontend_ms / 1e3,
            service_cv=service_cv,
            seed=seed + replication,
        )
        latencies.append(result.latency_s)
        p90s.append(float(np.percentile(result.latency_s, 90)))
        if len(p90s) >= MIN_REPLICATIONS and _settled(p90s):
            break
    return float(np.percentile(np.concatenate(latencies), 90)) * 1e3 + server.overhead_ms


def _settled(values: list[float]) -> bool:
    """Whether the standard error of the mean of ``values`` is within REL_SE of it."""
    mean = sum(values) / len(values)
    spread = float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return spread <= REL_SE * mean


def sim_model(name: str, rate_rps: float, block: ServerModel | None) -> SimModel:
    """A model of ``block``'s kind on the simulated server, sent ``rate_rps``."""
    assert block is not None
    policy = BatchPolicy(
        max_batch_size=block.max_batch_size,
        max_queue_delay_s=block.max_queue_delay_us / 1e6,
        preferred_batch_sizes=block.preferred_batch_sizes,
        instances=block.instances,
    )
    return SimModel(name, rate_rps, ServiceCurve.from_ms(dict(block.batch_service_ms)), policy)


def enforce_tail(
    problem: Problem,
    bins: list[Bin],
    slo_p90_ms: float,
    deadline_s: float = math.inf,
    slowdown: float = 1.0,
) -> tuple[list[Bin], dict[int, TailCheck], list[str]]:
    """``bins`` changed so every simulated server meets the SLO on a host ``slowdown`` times
    slower than profiled (module docstring), what was found of each simulated server kept
    (by ``id``), and notes saying what was done.

    Past ``deadline_s`` (``time.perf_counter()``: the plan's time limit) no server is
    simulated any more: the rest are kept as packed, unchecked, and a note counts them;
    tolerated slowdowns are searched while time is left, the others left None."""
    queue, kept, notes = list(bins), [], []
    simulated: dict[int, float] = {}
    moved = split = 0
    while queue:
        if time.perf_counter() > deadline_s:
            notes.append(
                f"tail constraint: {len(queue)} server(s) not simulated within the time "
                "limit (their predicted_p90_ms is read from the profiles' points)"
            )
            kept += queue
            break
        server = queue.pop()
        p90 = simulated_p90_ms(problem, server.members, server.type_index, slowdown)
        if p90 is not None:
            simulated[id(server)] = p90
        if p90 is None or p90 <= slo_p90_ms:
            kept.append(server)
            continue
        del simulated[id(server)]  # replaced by the servers it splits into
        if len(server.members) > 1:
            stay, out = _shed(problem, server, slo_p90_ms, slowdown)
            moved += len(out)
            queue += [_bin(problem, server.type_index, stay), _bin(problem, server.type_index, out)]
            continue
        [(m, share)] = server.members.items()
        if share / 2 < MIN_FRACTION:
            kept.append(server)
            simulated[id(server)] = p90
            name, kind = problem.models[m].model, problem.types[server.type_index].name
            host = f" on a host {slowdown:g}x slower" if slowdown != 1.0 else ""
            notes.append(f"{name} on {kind}: simulated p90 {p90:.1f} ms > SLO even alone{host}")
            continue
        split += 1
        half = {m: share / 2}
        queue += [_bin(problem, server.type_index, half), _bin(problem, server.type_index, half)]
    if moved or split:
        margin = f" on a host {slowdown:g}x slower than profiled" if slowdown != 1.0 else ""
        notes.append(
            f"tail constraint: {moved} replica(s) moved and {split} split so that every "
            f"server's simulated p90 meets the SLO of {slo_p90_ms:g} ms{margin}"
        )
    checks = _checks(problem, kept, simulated, slo_p90_ms, slowdown=slowdown, deadline_s=deadline_s)
    searched = sum(check.tolerated_slowdown is not None for check in checks.values())
    unsearched = sum(id(server) in simulated for server in kept) - searched
    if unsearched:
        notes.append(
            f"tolerated slowdown: {unsearched} server(s) not searched within the time limit "
            "(their tolerated_slowdown is null; a longer --time-limit-s searches them)"
        )
    return kept, checks, notes


def _checks(
    problem: Problem,
    kept: list[Bin],
    simulated: dict[int, float],
    slo_p90_ms: float,
    *,
    slowdown: float,
    deadline_s: float,
) -> dict[int, TailCheck]:
    """Each simulated server's p90 as profiled and its tolerated slowdown, while time lasts:
    past ``deadline_s`` a server keeps its p90 (with ``slowdown`` 1) and no tolerance, or,
    checked on a slower host, is left out (its predicted_p90_ms then comes from the
    profiles' points, as for a server never simulated)."""
    checks = {}
    for server in kept:
        if id(server) not in simulated:
            continue
        members, t = server.members, server.type_index
        slowed_p90 = simulated[id(server)]  # at ``slowdown``
        in_time = time.perf_counter() <= deadline_s
        p90: float | None = slowed_p90
        if slowdown != 1.0:  # the plan states the p90 as profiled
            p90 = simulated_p90_ms(problem, members, t) if in_time else None
        if p90 is None:
            continue
        tolerated = None
        if time.perf_counter() <= deadline_s:
            tolerated = tolerated_slowdown(problem, members, t, slo_p90_ms, slowed_p90, at=slowdown)
        checks[id(server)] = TailCheck(p90, tolerated)
    return checks


def slowdown_range(at: float) -> tuple[float, float]:
    """The factors a tolerated slowdown is searched between around ``at`` (the factor the
    server was checked at): down to at / MAX_SLOWDOWN, up to max(MAX_SLOWDOWN, 2 at)."""
    return at / MAX_SLOWDOWN, max(MAX_SLOWDOWN, 2 * at)


def tolerated_slowdown(
    problem: Problem,
    members: dict[int, float],
    t: int,
    slo_p90_ms: float,
    p90_ms: float,
    *,
    at: float = 1.0,
) -> float:
    """The largest factor by which the server's host may compute slower than profiled with
    its simulated p90 still within ``slo_p90_ms``, to SLOWDOWN_STEP (``p90_ms``: its p90 at
    the factor ``at``, by replications). Searched above ``at`` up to max(MAX_SLOWDOWN, 2 at)
    where ``p90_ms`` meets the SLO, else below it down to ``at`` / MAX_SLOWDOWN; below 1 the
    server misses the SLO as profiled. Bisection on the log of the factor, each factor one
    replication; at either end of the range the answer is that end ("at least", "at most")."""
    bottom, top = slowdown_range(at)
    low, high = (at, top) if p90_ms <= slo_p90_ms else (bottom, at)
    while high / low > SLOWDOWN_STEP:
        middle = math.sqrt(low * high)
        p90 = simulated_p90_ms(problem, members, t, middle, replications=1)
        if p90 is not None and p90 <= slo_p90_ms:
            low = middle
        else:
            high = middle
    return round(low, 3)


def _shed(
    problem: Problem, server: Bin, slo_p90_ms: float, slowdown: float
) -> tuple[dict[int, float], dict[int, float]]:
    """(members kept, members moved out): the fewest highest-rate members whose removal
    brings the server under the SLO (bisection; at least one moves, at least one stays)."""
    ranked = sorted(server.members.items(), key=lambda kv: -problem.models[kv[0]].rps * kv[1])
    low, high = 1, len(ranked) - 1  # moving `high` leaves one member
    while low < high:
        middle = (low + high) // 2
        p90 = simulated_p90_ms(problem, dict(ranked[middle:]), server.type_index, slowdown)
        if p90 is not None and p90 <= slo_p90_ms:
            high = middle
        else:
            low = middle + 1
    return dict(ranked[low:]), dict(ranked[:low])


def _bin(problem: Problem, t: int, members: dict[int, float]) -> Bin:
    return Bin(t, dict(members), bin_usage(problem, members, t))
