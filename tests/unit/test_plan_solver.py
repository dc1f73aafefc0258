"""The planner against known optima, an independent checker and the seeds' fleet."""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferpack.errors import ConfigError
from inferpack.plan.formats import Demand, Profile, RatePoint, plan_to_dict
from inferpack.plan.problem import PlanOptions, ServerType, build_problem, capacity_at_slo
from inferpack.plan.solve import make_plan
from tests.plan_checker import violations

SEEDS_TYPE = ServerType("inf1.6xlarge", 1.18, 32 * 1024, "Inferentia")


def check(plan, profiles, demand, types, options):  # type: ignore[no-untyped-def]
    document = plan_to_dict(plan)
    found = violations(
        document,
        [asdict(p) for p in profiles],
        {d.model: (d.kind, d.rps) for d in demand},
        {t.name: t.usd_per_hour for t in types},
        {t.name: t.memory_mb for t in types},
        options.max_memory_utilization,
        options.max_compute_utilization,
        options.server_overhead_mb,
    )
    assert found == [], found
    return document


def test_seeds_fleet_3040_bert_models_on_40_inf1_6xlarge() -> None:
    # The seeds' profile: 76 bert-base per inf1.6xlarge at 1.18 USD/h, P90 within 100 ms.
    profiles = [Profile("bert-base", "inf1.6xlarge", 300.0, 200.0, 100.0, "seeds", max_models=76)]
    demand = [Demand(f"bert-{i:04d}", "bert-base", 6230 / 3040) for i in range(3040)]
    options = PlanOptions(slo_p90_ms=100)
    plan = make_plan(profiles, demand, [SEEDS_TYPE], options)
    check(plan, profiles, demand, [SEEDS_TYPE], options)
    assert plan.totals["servers"] == 40
    assert plan.totals["usd_per_hour"] == pytest.approx(47.2)
    assert plan.totals["usd_per_model_hour"] == pytest.approx(0.0155, abs=5e-5)
    assert plan.plan.gap == 0.0
    assert all(len(s.models) == 76 for s in plan.servers)


TYPES = [
    ServerType("small", 1.0, 4000.0),
    ServerType("large", 2.5, 11000.0),
]


def _brute_force_usd(profiles, demand, types, options) -> float:  # type: ignore[no-untyped-def]
    """Cheapest partition of the models into servers, each group on its cheapest type."""
    by_key = {(p.kind, p.instance_type): p for p in profiles}

    def group_cost(group: tuple[Demand, ...]) -> float:
        best = float("inf")
        for t in types:
            room = t.memory_mb * options.max_memory_utilization - options.server_overhead_mb
            if any((d.kind, t.name) not in by_key for d in group):
                continue
            ps = [by_key[(d.kind, t.name)] for d in group]
            memory = sum(p.model_memory_mb for p in ps)
            compute = sum(d.rps / p.capacity_rps for d, p in zip(group, ps, strict=True))
            slots = sum(1 / p.max_models for p in ps if p.max_models)
            if (
                memory <= room + 1e-9
                and compute <= options.max_compute_utilization + 1e-9
                and slots <= 1 + 1e-9
            ):
                best = min(best, t.usd_per_hour)
        return best

    def partitions(items: list[Demand]):  # type: ignore[no-untyped-def]
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for smaller in partitions(rest):
            yield [(first,), *smaller]
            for i, group in enumerate(smaller):
                yield [*smaller[:i], (first, *group), *smaller[i + 1 :]]

    return min(sum(group_cost(g) for g in p) for p in partitions(list(demand)))


def _random_instance(seed: int, rps_scale: float):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    profiles = []
    for kind in ("a", "b"):
        for t in TYPES:
            if rng.random() < 0.85:
                profiles.append(
                    Profile(
                        kind,
                        t.name,
                        model_memory_mb=rng.choice([500.0, 900.0, 1400.0, 2100.0]),
                        capacity_rps=rng.choice([100.0, 250.0]) * (2 if t.name == "large" else 1),
                        slo_p90_ms=100.0,
                        source="test",
                        max_models=rng.choice([None, 2, 3, 4]),
                    )
                )
    kinds = {p.kind for p in profiles}
    demand = [
        Demand(f"m{i}", rng.choice(sorted(kinds)), round(rng.uniform(0, 60) * rps_scale, 2))
        for i in range(rng.randint(2, 6))
    ]
    return profiles, demand


@pytest.mark.parametrize("seed", range(12))
def test_memory_bound_instances_match_brute_force(seed: int) -> None:
    """With negligible rps no plan gains by splitting a model: the partition optimum is
    the optimum, and the exact MILP must find it."""
    profiles, demand = _random_instance(seed, rps_scale=0.001)
    options = PlanOptions(slo_p90_ms=100)
    try:
        plan = make_plan(profiles, demand, TYPES, options)
    except ConfigError:
        return  # some model fits nowhere: covered by its own test
    check(plan, profiles, demand, TYPES, options)
    assert plan.plan.objective_usd_per_hour == pytest.approx(
        _brute_force_usd(profiles, demand, TYPES, options)
    )
    assert plan.plan.status == "optimal"


@pytest.mark.parametrize("seed", range(12))
def test_compute_bound_instances_never_worse_than_brute_force(seed: int) -> None:
    """With real rps a plan may split a model's rps over replicas, so it can only beat the
    partition optimum; it must be feasible and the bound must not exceed it."""
    profiles, demand = _random_instance(seed, rps_scale=3.0)
    options = PlanOptions(slo_p90_ms=100)
    try:
        plan = make_plan(profiles, demand, TYPES, options)
    except ConfigError:
        return
    check(plan, profiles, demand, TYPES, options)
    brute = _brute_force_usd(profiles, demand, TYPES, options)
    assert plan.plan.objective_usd_per_hour <= brute + 1e-6
    assert plan.plan.lower_bound_usd_per_hour <= plan.plan.objective_usd_per_hour + 1e-9


def test_hot_model_gets_replicas_with_its_rps_split() -> None:
    profiles = [Profile("bert", "small", 500.0, 100.0, 100.0, "test")]
    demand = [Demand("hot", "bert", 250.0), Demand("cold", "bert", 1.0)]
    options = PlanOptions(slo_p90_ms=100)
    plan = make_plan(profiles, demand, TYPES[:1], options)
    check(plan, profiles, demand, TYPES[:1], options)
    shares = [m.rps for s in plan.servers for m in s.models if m.name == "hot"]
    assert len(shares) >= 4  # 250 rps at 80 of 100 rps per server
    assert sum(shares) == pytest.approx(250.0)
    assert all(s.compute_utilization <= 0.8 + 1e-6 for s in plan.servers)


def test_model_that_fits_nowhere_is_named() -> None:
    profiles = [Profile("bert", "small", 500.0, 100.0, 100.0, "test")]
    demand = [Demand("ok", "bert", 1.0), Demand("orphan-model", "resnet", 1.0)]
    with pytest.raises(ConfigError, match="orphan-model \\(resnet\\): no profile of kind resnet"):
        make_plan(profiles, demand, TYPES, PlanOptions(slo_p90_ms=100))
    huge = [Profile("bert", "small", 99_000.0, 100.0, 100.0, "test")]
    with pytest.raises(ConfigError, match="ok \\(bert\\): its memory does not fit"):
        make_plan(huge, demand[:1], TYPES, PlanOptions(slo_p90_ms=100))


def test_stricter_slo_than_a_hand_profile_makes_it_unusable() -> None:
    profiles = [Profile("bert", "small", 500.0, 100.0, 100.0, "test")]
    with pytest.raises(ConfigError, match="meets p90 50 ms"):
        make_plan(profiles, [Demand("m", "bert", 1.0)], TYPES, PlanOptions(slo_p90_ms=50))


def test_capacity_at_slo_reads_measured_points() -> None:
    points = tuple(
        RatePoint(rate, rate, p90 / 2, p90, p90 * 2, errors)
        for rate, p90, errors in [(50, 10, 0), (100, 30, 0), (200, 80, 0), (400, 300, 5)]
    )
    profile = Profile("k", "small", 1.0, 200.0, 100.0, "measured", points=points)
    assert capacity_at_slo(profile, 100.0) == 200.0
    assert capacity_at_slo(profile, 40.0) == 100.0
    assert capacity_at_slo(profile, 5.0) is None
    assert profile.p90_at_ms(150.0) == pytest.approx(55.0)


def test_mixed_plan_beats_or_matches_every_single_type() -> None:
    profiles, demand = _random_instance(3, rps_scale=1.0)
    options = PlanOptions(slo_p90_ms=100)
    plan = make_plan(profiles, demand, TYPES, options)
    for row in plan.alternatives:
        if row["feasible"]:
            assert plan.plan.objective_usd_per_hour <= row["usd_per_hour"] + 1e-9
            assert row["lower_bound_usd_per_hour"] <= row["usd_per_hour"] + 1e-9


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    models=st.integers(1, 60),
    hot=st.floats(0.0, 5.0),
)
def test_random_plans_are_feasible_and_bounded(seed: int, models: int, hot: float) -> None:
    rng = random.Random(seed)
    profiles = [
        Profile(
            kind,
            t.name,
            rng.uniform(100, 1500),
            rng.uniform(50, 400),
            100.0,
            "t",
            max_models=rng.choice([None, 8, 20]),
        )
        for kind, t in itertools.product(("a", "b", "c"), TYPES)
    ]
    demand = [
        Demand(f"m{i}", rng.choice("abc"), rng.paretovariate(1.2) * hot) for i in range(models)
    ]
    options = PlanOptions(slo_p90_ms=100, time_limit_s=2.0)
    plan = make_plan(profiles, demand, TYPES, options)
    check(plan, profiles, demand, TYPES, options)
    assert 0.0 <= plan.plan.gap <= 1.0


def test_profile_that_sustains_nothing_at_the_slo_is_not_used() -> None:
    points = (RatePoint(0.0, 0.0, 1.0, 5.0, 9.0, 0.0), RatePoint(10.0, 10.0, 200, 500, 900, 0.0))
    zero = Profile("bert", "large", 500.0, 10.0, 100.0, "measured", points=points)
    usable = Profile("bert", "small", 500.0, 100.0, 100.0, "hand")
    plan = make_plan([zero, usable], [Demand("m", "bert", 1.0)], TYPES, PlanOptions(slo_p90_ms=100))
    assert {s.instance_type for s in plan.servers} == {"small"}


def test_capacity_counts_only_what_was_answered() -> None:
    """A level offered 400 req/s that answered 240 (p90 80 ms) proves no capacity of 400 at
    SLO 100: it did not keep up. A level that kept up counts at its answered rate."""
    points = (
        RatePoint(200, 196, 20, 40, 60, 0),  # kept up (98 %): counts as 196
        RatePoint(400, 240, 40, 80, 120, 0),  # fell behind (60 %): does not count
    )
    profile = Profile("k", "small", 1.0, 400.0, 100.0, "measured", points=points)
    assert capacity_at_slo(profile, 100.0) == 196.0
    behind = Profile("k", "small", 1.0, 400.0, 100.0, "measured", points=points[1:])
    assert capacity_at_slo(behind, 100.0) is None


def test_the_time_limit_keeps_the_fast_packing_and_says_what_it_dropped() -> None:
    """A limit too short for the balanced packings: the first-fit plan is returned, valid,
    and the plan notes which packing did not finish."""
    rng = random.Random(5)
    profiles = [Profile("a", t.name, 500.0, 250.0, 100.0, "test") for t in TYPES]
    demand = [Demand(f"m{i}", "a", round(rng.uniform(0, 30), 2)) for i in range(400)]
    options = PlanOptions(slo_p90_ms=100, time_limit_s=1e-3)
    plan = make_plan(profiles, demand, TYPES, options)
    check(plan, profiles, demand, TYPES, options)
    assert plan.plan.solver.startswith("first-fit")
    assert any("balanced packing was not finished" in note for note in plan.plan.notes)
    roomy = make_plan(profiles, demand, TYPES, PlanOptions(slo_p90_ms=100, time_limit_s=30))
    assert not any("not finished" in note for note in roomy.plan.notes)
    assert roomy.plan.objective_usd_per_hour <= plan.plan.objective_usd_per_hour


def test_instant_bound_is_a_lower_bound_of_the_lp() -> None:
    """The bound used when the LP runs out of time never exceeds the LP's (both valid)."""
    from inferpack.plan.milp import aggregated_bound, instant_bound

    rng = random.Random(3)
    profiles = [
        Profile("a", "small", 500.0, 100.0, 50.0, "t"),
        Profile("b", "small", 100.0, 400.0, 50.0, "t", max_models=20),
        Profile("a", "large", 500.0, 300.0, 50.0, "t"),
        Profile("b", "large", 100.0, 900.0, 50.0, "t"),
    ]
    demand = [Demand(f"m{i}", rng.choice("ab"), rng.uniform(0.1, 150.0)) for i in range(60)]
    problem = build_problem(profiles, demand, TYPES, PlanOptions(slo_p90_ms=50))
    quick = instant_bound(problem)
    result, _ = aggregated_bound(problem, 10.0)
    assert 0 < quick <= result.bound + 1e-9


def test_an_lp_out_of_time_leaves_the_instant_bound_and_no_guidance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--time-limit-s is a promise: an LP that does not finish gives way to the instant
    bound; the plan is packed without the LP's guidance and states the weaker gap."""
    import numpy as np

    from inferpack.plan import milp

    def stuck(problem, time_limit_s, integer_counts):  # type: ignore[no-untyped-def]
        shape = (len(problem.models), len(problem.types))
        return milp.MilpResult("Time limit reached", None, 0.0, None), np.ones(shape)

    monkeypatch.setattr(milp, "_aggregated", stuck)
    profiles = [Profile("a", "small", 500.0, 100.0, 50.0, "t")]
    demand = [Demand(f"m{i}", "a", 10.0) for i in range(30)]
    options = PlanOptions(slo_p90_ms=50)
    result, z = milp.aggregated_bound(build_problem(profiles, demand, TYPES, options), 1.0)
    assert result.bound == milp.instant_bound(build_problem(profiles, demand, TYPES, options))
    assert not z.any()
    plan = make_plan(profiles, demand, TYPES, options)
    check(plan, profiles, demand, TYPES, options)
    assert plan.plan.lower_bound_usd_per_hour == pytest.approx(result.bound)
