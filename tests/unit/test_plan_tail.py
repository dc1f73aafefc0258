"""The planner's tail constraint: no server planned whose simulated p90 misses the SLO."""

from __future__ import annotations

import time

import pytest

from inferpack.plan import tail
from inferpack.plan.formats import Demand, Profile
from inferpack.plan.packing import Bin, bin_usage
from inferpack.plan.problem import PlanOptions, ServerType, build_problem
from inferpack.plan.server_model import ServerModel
from inferpack.plan.solve import make_plan
from inferpack.plan.tail import enforce_tail, server_p90_ms, sim_model, simulated_p90_ms

# Batching is worth a lot (8 rows in 12 ms, one in 8 ms): capacity_rps (500) was measured
# with the batches full. Forty models at 10 req/s each batch alone most of the time.
BLOCK = ServerModel(
    workers=1,
    frontend_ms=0.1,
    max_batch_size=8,
    max_queue_delay_us=2000,
    instances=1,
    batch_service_ms=((1, 8.0), (8, 12.0)),
)
TYPES = [ServerType("c5.large", 0.085, 4096.0)]
DEMAND = [Demand(f"m{i:02d}", "cnn", 10.0) for i in range(40)]


def _profile(server: ServerModel | None) -> Profile:
    return Profile("cnn", "c5.large", 1.0, 500.0, 50.0, "hand", server=server)


def test_capacity_shares_alone_pack_a_server_that_misses_the_slo() -> None:
    options = PlanOptions(slo_p90_ms=50.0)
    problem = build_problem([_profile(BLOCK)], DEMAND, TYPES, options)
    everything = dict.fromkeys(range(40), 1.0)
    p90 = simulated_p90_ms(problem, everything, 0)
    assert p90 is not None and p90 > 200  # per-model batches stay small: far over 50 ms
    one = simulated_p90_ms(problem, {0: 1.0}, 0)
    assert one is not None and one < 12  # alone, 10 req/s: delay + one batch


def test_every_planned_server_meets_the_slo_in_simulation() -> None:
    options = PlanOptions(slo_p90_ms=50.0)
    blind = make_plan([_profile(None)], DEMAND, TYPES, options)
    plan = make_plan([_profile(BLOCK)], DEMAND, TYPES, options)
    assert len(blind.servers) == 1  # 400 of 500 req/s: fits one server by shares
    assert len(plan.servers) > len(blind.servers)
    assert all(s.predicted_p90_ms is not None and s.predicted_p90_ms <= 50 for s in plan.servers)
    assert sorted(m.name for s in plan.servers for m in s.models) == [d.model for d in DEMAND]
    assert any("tail constraint" in note for note in plan.plan.notes)
    # The bound ignores the tail: still a lower bound, now with a gap.
    assert plan.plan.lower_bound_usd_per_hour <= plan.plan.objective_usd_per_hour


def test_a_hot_model_alone_is_split_across_servers() -> None:
    """One model at 300 req/s of batch-1 work (no batching allowed) needs several servers."""
    block = ServerModel(1, 0.0, 1, 0, 1, ((1, 8.0),))
    profile = Profile("cnn", "c5.large", 1.0, 400.0, 50.0, "hand", server=block)
    plan = make_plan([profile], [Demand("hot", "cnn", 300.0)], TYPES, PlanOptions(50.0))
    assert len(plan.servers) >= 3
    assert all(s.predicted_p90_ms is not None and s.predicted_p90_ms <= 50 for s in plan.servers)
    assert sum(m.rps for s in plan.servers for m in s.models) == 300.0


def test_past_the_time_limit_servers_are_kept_unchecked_with_a_note() -> None:
    """--time-limit-s is a promise: the tail check stops at its deadline and says so."""
    options = PlanOptions(slo_p90_ms=50.0)
    problem = build_problem([_profile(BLOCK)], DEMAND, TYPES, options)
    plan = make_plan([_profile(BLOCK)], DEMAND, TYPES, options)
    bins = [
        Bin(0, dict.fromkeys(range(40), 1.0), bin_usage(problem, dict.fromkeys(range(40), 1.0), 0))
    ]
    kept, simulated, notes = enforce_tail(problem, bins, 50.0, deadline_s=time.perf_counter() - 1)
    assert kept == bins and simulated == {}
    assert notes == [
        "tail constraint: 1 server(s) not simulated within the time limit (their "
        "predicted_p90_ms is read from the profiles' points)"
    ]
    assert len(plan.servers) > 1  # with time, the same server is split


# Near capacity (about 85 % busy) a 20 s replication's p90 varies by 1.4x between seeds.
BUSY = ServerModel(1, 0.05, 16, 0, 1, ((1, 1.0), (16, 10.0)), service_cv=1.25)
SHARES = (0.5, 0.3, 0.2)


def _p90s(rate_rps: float, seeds: range) -> list[float]:
    rates = [rate_rps * share for share in SHARES]
    models = [sim_model(str(i), r, BUSY) for i, r in enumerate(rates)]
    found = [server_p90_ms(BUSY, models, rates, 20.0, seed) for seed in seeds]
    assert all(p is not None for p in found)
    return [p for p in found if p is not None]


def test_a_busy_server_is_simulated_until_its_p90_no_longer_depends_on_the_seed() -> None:
    p90s = _p90s(1000.0, range(0, 600, 100))
    assert max(p90s) / min(p90s) < 1.2  # one replication per seed: 1.41


def test_one_replication_per_seed_is_what_the_replications_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tail, "MAX_REPLICATIONS", 1)
    p90s = _p90s(1000.0, range(0, 600, 100))
    assert max(p90s) / min(p90s) > 1.25


def test_a_lightly_loaded_server_stops_after_a_few_replications_a_busy_one_runs_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[int] = []
    real = tail.simulate_server

    def counted(*args: object, **kwargs: object) -> object:
        runs.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tail, "simulate_server", counted)
    _p90s(100.0, range(1))
    light = len(runs)
    runs.clear()
    _p90s(1000.0, range(1))
    assert tail.MIN_REPLICATIONS <= light <= 3 < len(runs) <= tail.MAX_REPLICATIONS


def test_each_server_states_the_slowdown_it_tolerates_and_the_bound_is_tight() -> None:
    """At its tolerated factor a server still meets the SLO (one replication, as searched);
    one step slower it misses it; a lighter server tolerates more."""
    problem = build_problem([_profile(BLOCK)], DEMAND, TYPES, PlanOptions(slo_p90_ms=50.0))
    light, busy = {0: 1.0, 1: 1.0}, dict.fromkeys(range(8), 1.0)
    factors = {}
    for name, members in (("light", light), ("busy", busy)):
        p90 = simulated_p90_ms(problem, members, 0)
        assert p90 is not None and p90 <= 50.0
        factor = tail.tolerated_slowdown(problem, members, 0, 50.0, p90)
        factors[name] = factor
        assert 1.0 <= factor < tail.MAX_SLOWDOWN / tail.SLOWDOWN_STEP
        at = simulated_p90_ms(problem, members, 0, factor, replications=1)
        past = simulated_p90_ms(problem, members, 0, factor * tail.SLOWDOWN_STEP**2, 1)
        assert at is not None and at <= 50.0
        assert past is not None and past > 50.0
    assert factors["light"] > factors["busy"]


def test_a_server_over_the_slo_as_profiled_tolerates_less_than_one() -> None:
    problem = build_problem([_profile(BLOCK)], DEMAND, TYPES, PlanOptions(slo_p90_ms=50.0))
    everything = dict.fromkeys(range(40), 1.0)
    p90 = simulated_p90_ms(problem, everything, 0)
    assert p90 is not None and p90 > 50.0
    assert tail.tolerated_slowdown(problem, everything, 0, 50.0, p90) < 1.0


def test_a_slowdown_margin_buys_servers_that_hold_on_a_slower_host() -> None:
    plain = make_plan([_profile(BLOCK)], DEMAND, TYPES, PlanOptions(slo_p90_ms=50.0))
    margin = make_plan(
        [_profile(BLOCK)], DEMAND, TYPES, PlanOptions(slo_p90_ms=50.0, slowdown_margin=1.5)
    )
    assert len(margin.servers) > len(plain.servers)
    assert margin.plan.slowdown_margin == 1.5
    problem = build_problem([_profile(BLOCK)], DEMAND, TYPES, PlanOptions(slo_p90_ms=50.0))
    index = {d.model: m for m, d in enumerate(DEMAND)}
    for server in margin.servers:
        members = {index[share.name]: share.rps / 10.0 for share in server.models}
        slow = simulated_p90_ms(problem, members, 0, 1.5)
        assert slow is not None and slow <= 50.0
        # predicted_p90_ms stays the p90 as profiled; the tolerance is the margin or more
        assert server.predicted_p90_ms == simulated_p90_ms(problem, members, 0)
        assert server.tolerated_slowdown is not None and server.tolerated_slowdown >= 1.5
    assert any(s.tolerated_slowdown and s.tolerated_slowdown < 1.5 for s in plain.servers)


def test_slowed_scales_the_batch_curve_and_frontend_only() -> None:
    slow = BLOCK.slowed(2.0)
    assert slow.batch_service_ms == ((1, 16.0), (8, 24.0))
    assert slow.frontend_ms == 0.2
    assert (slow.max_queue_delay_us, slow.service_cv, slow.overhead_ms) == (2000, 0.0, 0.0)
    assert BLOCK.slowed(1.0) is BLOCK


def test_past_the_deadline_the_tolerance_is_left_unsearched_and_a_slowed_p90_dropped() -> None:
    """The search is bounded by the plan's time limit: a server checked on a slower host
    past it is left out (its p90 as profiled would need another simulation), and the note
    counts every server not searched."""
    problem = build_problem([_profile(BLOCK)], DEMAND, TYPES, PlanOptions(slo_p90_ms=50.0))
    members = {0: 1.0, 1: 1.0}
    server = Bin(0, members, bin_usage(problem, members, 0))
    past = time.perf_counter() - 1
    simulated = {id(server): 9.0}
    kept = tail._checks(problem, [server], simulated, 50.0, slowdown=1.0, deadline_s=past)
    assert kept == {id(server): tail.TailCheck(9.0, None)}
    assert tail._checks(problem, [server], simulated, 50.0, slowdown=1.5, deadline_s=past) == {}


def test_the_cli_marks_the_ends_of_the_range_searched() -> None:
    from inferpack.cli.plan_cmd import _slowdown

    top = tail.MAX_SLOWDOWN ** (1 - 1 / 32)  # every factor passed: the highest answer
    assert _slowdown(round(top, 3), 1.0) == ">= x3.83"
    assert _slowdown(1.35, 1.0) == "x1.35"
    assert _slowdown(0.25, 1.0) == "<= x0.25"
    assert _slowdown(None, 1.0) == "-"
    assert _slowdown(3.83, 3.5) == "x3.83"  # with a margin of 3.5 the range reaches 7
