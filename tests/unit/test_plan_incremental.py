"""plan --previous: a re-plan that keeps models where they are and lists what moves."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.plan.formats import Demand, Profile
from inferpack.plan.incremental import changes, replan
from inferpack.plan.problem import PlanOptions, ServerType
from inferpack.plan.solve import make_plan
from tests.unit.test_plan_solver import check

TYPES = [ServerType("small", 1.0, 4000.0), ServerType("large", 2.5, 11000.0)]
PROFILES = [
    Profile("a", "small", 300.0, 100.0, 50.0, "t"),
    Profile("a", "large", 300.0, 300.0, 50.0, "t"),
    Profile("b", "small", 100.0, 400.0, 50.0, "t", max_models=20),
    Profile("b", "large", 100.0, 900.0, 50.0, "t"),
]
OPTIONS = PlanOptions(slo_p90_ms=50.0, time_limit_s=5.0)


def _demand(seed: int = 0, count: int = 60) -> list[Demand]:
    rng = random.Random(seed)
    return [Demand(f"m{i:03d}", rng.choice("ab"), rng.uniform(0.5, 40.0)) for i in range(count)]


def _moved(plan_changes: dict) -> int:  # type: ignore[type-arg]
    return len(plan_changes["moves"])


def test_the_same_demand_moves_nothing() -> None:
    demand = _demand()
    before = make_plan(PROFILES, demand, TYPES, OPTIONS)
    after = replan(before, PROFILES, demand, TYPES, OPTIONS)
    check(after, PROFILES, demand, TYPES, OPTIONS)
    assert after.changes == {"moves": [], "servers_added": [], "servers_removed": []}
    assert [s.name for s in after.servers] == sorted(s.name for s in before.servers)
    assert after.totals["usd_per_hour"] == before.totals["usd_per_hour"]


def test_a_small_change_moves_few_models_where_a_fresh_plan_moves_many() -> None:
    demand = _demand()
    before = make_plan(PROFILES, demand, TYPES, OPTIONS)
    rng = random.Random(5)
    nudged = [replace(d, rps=d.rps * rng.uniform(0.9, 1.1)) for d in demand]
    after = replan(before, PROFILES, nudged, TYPES, OPTIONS)
    check(after, PROFILES, nudged, TYPES, OPTIONS)
    fresh = make_plan(PROFILES, nudged, TYPES, OPTIONS)
    assert _moved(after.changes) < _moved(changes(before, fresh.servers))
    assert _moved(after.changes) <= len(demand) // 5


def test_demand_up_adds_servers_and_down_removes_them() -> None:
    demand = _demand()
    before = make_plan(PROFILES, demand, TYPES, OPTIONS)
    up = [replace(d, rps=d.rps * 3) for d in demand]
    grown = replan(before, PROFILES, up, TYPES, OPTIONS)
    check(grown, PROFILES, up, TYPES, OPTIONS)
    assert grown.changes is not None and grown.changes["servers_added"]
    assert not grown.changes["servers_removed"]
    kept = set(s.name for s in before.servers) & set(s.name for s in grown.servers)
    assert kept == set(s.name for s in before.servers)  # the old servers stay, named as before
    down = [replace(d, rps=d.rps * 0.3) for d in demand]
    shrunk = replan(grown, PROFILES, down, TYPES, OPTIONS)
    check(shrunk, PROFILES, down, TYPES, OPTIONS)
    assert shrunk.changes is not None and shrunk.changes["servers_removed"]
    assert shrunk.totals["usd_per_hour"] < grown.totals["usd_per_hour"]


def test_models_that_come_and_go_are_listed() -> None:
    demand = _demand(count=30)
    before = make_plan(PROFILES, demand, TYPES, OPTIONS)
    later = [*demand[1:], Demand("new-model", "b", 5.0)]
    after = replan(before, PROFILES, later, TYPES, OPTIONS)
    check(after, PROFILES, later, TYPES, OPTIONS)
    moves = {m["model"]: m for m in after.changes["moves"]}  # type: ignore[index]
    assert moves[demand[0].model]["to"] == [] and moves[demand[0].model]["from"]
    assert moves["new-model"]["from"] == [] and len(moves["new-model"]["to"]) == 1


def test_headroom_plans_for_more_than_observed() -> None:
    demand = _demand()
    before = make_plan(PROFILES, demand, TYPES, OPTIONS)
    roomy = replan(before, PROFILES, demand, TYPES, OPTIONS, headroom=0.5)
    scaled = [replace(d, rps=d.rps * 1.5) for d in demand]
    check(roomy, PROFILES, scaled, TYPES, OPTIONS)
    assert "headroom 0.5" in roomy.plan.solver


def test_max_moves_caps_the_moves_that_only_save_money() -> None:
    demand = _demand()
    before = make_plan(PROFILES, demand, TYPES, OPTIONS)
    down = [replace(d, rps=d.rps * 0.3) for d in demand]
    frozen = replan(before, PROFILES, down, TYPES, OPTIONS, max_moves=0)
    check(frozen, PROFILES, down, TYPES, OPTIONS)
    assert frozen.changes == {"moves": [], "servers_added": [], "servers_removed": []}
    free = replan(before, PROFILES, down, TYPES, OPTIONS)
    assert free.totals["usd_per_hour"] < frozen.totals["usd_per_hour"]
    some = replan(before, PROFILES, down, TYPES, OPTIONS, max_moves=8)
    moved = sum(len(m["to"]) for m in some.changes["moves"])  # type: ignore[index]
    assert moved <= 8


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    steps=st.lists(st.floats(0.1, 4.0), min_size=1, max_size=4),
    hot=st.integers(0, 59),
)
def test_a_chain_of_replans_stays_valid_and_lists_what_changed(
    seed: int, steps: list[float], hot: int
) -> None:
    """deploy --follow re-plans each plan from the last: under random scalings (and one
    model turned very hot, a replica too hot for its server) every plan in the chain
    passes the independent checker, and its ``changes`` are exactly the difference of the
    two placements."""
    demand = _demand(seed)
    current = make_plan(PROFILES, demand, TYPES, OPTIONS)
    for number, scale in enumerate(steps):
        rates = [replace(d, rps=d.rps * scale) for d in demand]
        if number % 2 == 0:
            rates[hot] = replace(rates[hot], rps=rates[hot].rps * 20)
        after = replan(current, PROFILES, rates, TYPES, OPTIONS, headroom=0.2)
        check(after, PROFILES, [replace(d, rps=d.rps * 1.2) for d in rates], TYPES, OPTIONS)
        assert after.changes == changes(current, after.servers)
        hosts_before = {s.name for s in current.servers}
        hosts_after = {s.name for s in after.servers}
        assert set(after.changes["servers_added"]) == hosts_after - hosts_before
        current = after
