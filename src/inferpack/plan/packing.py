"""Heuristic packing: first-fit decreasing, then emptying and downsizing servers.

    assign each model a type            (the bound's choice, or the cheapest share)
    split models whose compute share > 1 into equal replicas
    sort replicas by their largest share, decreasing
    each goes into the first open server of its type with room (never two replicas of one
    model on one server), else into a new one
    improve: for the emptiest servers, move every replica elsewhere (re-sized for the other
    type) and close the server; give a server the cheapest type its contents fit

FFD is fast (3,000 models in well under a second) and near-optimal when models are small
next to a server, which is the planner's case (tens of models per server). The exact MILP
starts from it and the aggregated bound says how far it can be from the optimum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from inferpack.plan.problem import Problem

EPS = 1e-9


@dataclass
class Bin:
    """One server: its type and the replicas on it, as (model index, share of rps)."""

    type_index: int
    members: dict[int, float] = field(default_factory=dict)  # model → fraction of its rps
    used: np.ndarray = field(default_factory=lambda: np.zeros(3))


def replica_vector(problem: Problem, m: int, t: int, fraction: float) -> np.ndarray:
    """(memory, compute, slots) shares of one replica carrying ``fraction`` of the rps."""
    return np.array([problem.memory[m, t], problem.compute[m, t] * fraction, problem.slots[m, t]])


def fits(used: np.ndarray, item: np.ndarray) -> bool:
    return bool(np.all(used + item <= 1.0 + EPS))


def bin_usage(problem: Problem, members: dict[int, float], t: int) -> np.ndarray:
    used = np.zeros(3)
    for m, fraction in members.items():
        used += replica_vector(problem, m, t, fraction)
    return used


def cheapest_share_assignment(problem: Problem) -> list[int]:
    """Per model, the type where its largest share costs the least (price x share)."""
    share = np.maximum(np.maximum(problem.memory, problem.compute), problem.slots)
    cost = np.where(problem.usable, share * problem.prices()[None, :], np.inf)
    return [int(t) for t in np.argmin(cost, axis=1)]


def first_fit_decreasing(problem: Problem, assignment: list[int]) -> list[Bin]:
    """Replicas by largest share, decreasing, each into the first open server of its type
    with room. The first fit is found for all open servers of a type at once (one numpy
    comparison per replica): 30,000 models on 600 servers take well under a second."""
    items = []
    for m, t in enumerate(assignment):
        copies = problem.replicas(m, t)
        for _ in range(copies):
            vector = replica_vector(problem, m, t, 1.0 / copies)
            items.append((float(vector.max()), float(vector[0]), m, t, 1.0 / copies))
    items.sort(key=lambda item: (-item[0], -item[1], item[2]))
    bins: list[Bin] = []
    open_by_type: dict[int, _OpenBins] = {}
    for _, _, m, t, fraction in items:
        vector = replica_vector(problem, m, t, fraction)
        opened = open_by_type.setdefault(t, _OpenBins(len(items)))
        target = opened.first_fit(vector, m)
        if target is None:
            target = opened.add(Bin(t))
            bins.append(target)
        target.members[m] = target.members.get(m, 0.0) + fraction
        opened.fill(target, vector)
    for server in bins:
        server.used = server.used.copy()  # its own vector, not a view of the open array
    return bins


class _OpenBins:
    """The open servers of one type, with their used vectors in one array."""

    def __init__(self, capacity: int) -> None:
        self.used = np.zeros((capacity, 3))
        self.bins: list[Bin] = []

    def first_fit(self, vector: np.ndarray, m: int) -> Bin | None:
        count = len(self.bins)
        room = np.flatnonzero(np.all(self.used[:count] + vector <= 1.0 + EPS, axis=1))
        return next((self.bins[i] for i in room if m not in self.bins[i].members), None)

    def add(self, server: Bin) -> Bin:
        self.bins.append(server)
        server.used = self.used[len(self.bins) - 1]  # a view: fill() updates both
        return server

    def fill(self, server: Bin, vector: np.ndarray) -> None:
        server.used += vector


def try_empty(problem: Problem, victim: Bin, others: list[Bin]) -> bool:
    """Move every replica of ``victim`` into ``others`` (first that fits, re-sized for its
    type; merging into a replica of the same model costs compute only); all or nothing."""
    if not others:
        return False
    types = np.array([b.type_index for b in others])
    used = np.array([b.used for b in others])
    moves: list[tuple[int, int, float, np.ndarray]] = []
    for m, fraction in sorted(victim.members.items(), key=lambda kv: -kv[1]):
        vectors = np.stack(
            [
                problem.memory[m, types],
                problem.compute[m, types] * fraction,
                problem.slots[m, types],
            ],
            axis=1,
        )
        merge = np.fromiter((m in b.members for b in others), dtype=bool, count=len(others))
        vectors[merge, 0] = vectors[merge, 2] = 0.0
        ok = problem.usable[m, types] & np.all(used + vectors <= 1.0 + EPS, axis=1)
        if not ok.any():
            return False
        i = int(np.argmax(ok))
        used[i] += vectors[i]
        moves.append((i, m, fraction, vectors[i]))
    for i, m, fraction, vector in moves:
        others[i].members[m] = others[i].members.get(m, 0.0) + fraction
        others[i].used = others[i].used + vector
    return True


def _downsize(problem: Problem, server: Bin) -> None:
    """Give the server the cheapest type its contents fit on."""
    prices = problem.prices()
    for cheaper in np.argsort(prices):
        t = int(cheaper)
        if prices[t] >= prices[server.type_index]:
            return
        if not all(problem.usable[m, t] for m in server.members):
            continue
        used = bin_usage(problem, server.members, t)
        if np.all(used <= 1.0 + EPS):
            server.type_index, server.used = t, used
            return


def improve(problem: Problem, bins: list[Bin], rounds: int = 3, downsize: bool = True) -> list[Bin]:
    """Close the emptiest servers by moving their replicas, then (unless told not to, for
    a plan that must stay on one type) downsize the rest. Servers are ranked by fullness
    once per round (the ranking moves little within a round; sorting per victim made this
    quadratic in servers)."""
    bins = list(bins)
    prices = problem.prices()
    for _ in range(rounds):
        closed = False
        fullness = [float(b.used.max()) for b in bins]
        order = sorted(range(len(bins)), key=lambda i: (fullness[i], -prices[bins[i].type_index]))
        fullest_first = [bins[i] for i in reversed(order)]
        gone: set[int] = set()
        for i in order:
            victim = bins[i]
            others = [b for b in fullest_first if b is not victim and id(b) not in gone]
            if try_empty(problem, victim, others):
                gone.add(id(victim))
                closed = True
        bins = [b for b in bins if id(b) not in gone]
        for server in bins if downsize else ():
            _downsize(problem, server)
        if not closed:
            break
    return bins


def cost_of(problem: Problem, bins: list[Bin]) -> float:
    prices = problem.prices()
    return float(sum(prices[b.type_index] for b in bins))


class PackingTimeoutError(Exception):
    """A packing passed its deadline before it finished (its partial result is dropped)."""


def balanced_fill(
    problem: Problem,
    assignment: list[int],
    max_share: float = 1.0,
    deadline_s: float = math.inf,
) -> list[Bin]:
    """Bin-centric packing for several tight dimensions at once.

        d = direction of the summed sizes still to place (memory, compute, slots)
        open a server; put in the largest replica left
        repeat: add the replica that fits and keeps the server's used vector closest to d
                (ties: the larger one); close the server when nothing fits

    Item-centric FFD fills servers with hot models until compute is full and memory idle,
    then cold ones the other way round; keeping every server on the diagonal of what is
    left pairs them up (the idea behind the dot-product heuristics of Panigrahy et al.,
    "Heuristics for Vector Bin Packing", 2011). A hot model is split into replicas of at
    most ``max_share`` compute each: a replica that takes a whole server's compute
    strands its memory; each extra replica costs the model's memory once more.

    Quadratic in replicas (each pick weighs every replica left): 3,000 models take 0.3 s,
    30,000 about 15 s on a 2-core VM. Past ``deadline_s`` (``time.perf_counter()``) it
    raises PackingTimeoutError between servers.
    """
    bins: list[Bin] = []
    for t in sorted(set(assignment)):
        models, sizes = _replica_items(problem, assignment, t, max_share)
        while len(models):
            if time.perf_counter() > deadline_s:
                raise PackingTimeoutError
            server, placed = _fill_one(problem, t, models, sizes, max_share)
            bins.append(server)
            models, sizes = models[~placed], sizes[~placed]
    return bins


def _fill_one(
    problem: Problem, t: int, models: np.ndarray, sizes: np.ndarray, max_share: float
) -> tuple[Bin, np.ndarray]:
    """One server filled from the replicas left; returns it and which replicas it took."""
    server = Bin(t)
    placed = np.zeros(len(models), dtype=bool)
    on_server = np.zeros(len(problem.models), dtype=bool)
    total = sizes.sum(axis=0)
    direction = total / (np.linalg.norm(total) or 1.0)
    largest = sizes.max(axis=1)
    pick = int(np.argmax(largest))
    while True:
        m = int(models[pick])
        _add(problem, server, m, t=t, size=sizes[pick], max_share=max_share)
        placed[pick] = on_server[m] = True
        fit = ~placed & ~on_server[models] & np.all(sizes <= 1.0 - server.used + EPS, axis=1)
        if not fit.any():
            return server, placed
        candidates = np.flatnonzero(fit)
        after = server.used + sizes[candidates]
        off = np.linalg.norm(after - np.outer(after @ direction, direction), axis=1)
        pick = int(candidates[np.argmin(off - 1e-6 * largest[candidates])])


def _add(
    problem: Problem, server: Bin, m: int, *, t: int, size: np.ndarray, max_share: float
) -> None:
    server.members[m] = server.members.get(m, 0.0) + 1.0 / problem.replicas(m, t, max_share)
    server.used = server.used + size


def _replica_items(
    problem: Problem, assignment: list[int], t: int, max_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """Model index and (memory, compute, slots) size of every replica assigned to type t."""
    models, sizes = [], []
    for m, assigned in enumerate(assignment):
        if assigned != t:
            continue
        copies = problem.replicas(m, t, max_share)
        vector = replica_vector(problem, m, t, 1.0 / copies)
        models += [m] * copies
        sizes += [vector] * copies
    return np.array(models, dtype=np.int64), np.array(sizes, dtype=np.float64).reshape(-1, 3)
