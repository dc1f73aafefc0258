"""The fleet simulator: routing by planned share, the router stage, network delay, traces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inferpack.errors import ConfigError
from inferpack.plan.formats import ModelShare, Plan, PlanSummary, Profile, ServerPlan
from inferpack.plan.server_model import ServerModel
from inferpack.simulate.demand import from_plan, read_trace, steady
from inferpack.simulate.fleet import FleetOptions, simulate_fleet
from inferpack.simulate.result import build_document

BLOCK = ServerModel(
    workers=1,
    frontend_ms=0.0,
    max_batch_size=1,
    max_queue_delay_us=0,
    instances=1,
    batch_service_ms=((1, 10.0),),
)
PROFILE = Profile("k", "c5.large", 1.0, 80.0, 50.0, "test", server=BLOCK)


def _plan(*servers: tuple[str, tuple[tuple[str, float], ...]]) -> Plan:
    summary = PlanSummary(50.0, "test", 0.0, 1.0, 1.0, 0.0)
    return Plan(
        summary,
        tuple(
            ServerPlan(name, "c5.large", 0.1, tuple(ModelShare(m, "k", r) for m, r in models),
                       1.0, 0.1, 0.5, None)
            for name, models in servers
        ),
    )  # fmt: skip


def test_one_server_is_an_md1_queue_plus_the_network() -> None:
    plan = _plan(("s1", (("a", 70.0),)))
    options = FleetOptions(duration_s=2000.0, network_ms=1.5, seed=4)
    arrivals, [outcome] = simulate_fleet(plan, [PROFILE], from_plan(plan, 2000.0), options)
    rho = 0.7
    md1_ms = 10.0 + rho * 10.0 / (2 * (1 - rho))
    assert outcome.latency_ms.mean() == pytest.approx(md1_ms + 1.5, rel=0.03)
    assert outcome.busy_share == pytest.approx(rho, rel=0.03)
    assert len(arrivals.time_s) == pytest.approx(70 * 2000, rel=0.02)


def test_the_overhead_is_added_to_every_request_and_queues_nothing() -> None:
    plan = _plan(("s1", (("a", 70.0),)))
    slow = Profile("k", "c5.large", 1.0, 80.0, 50.0, "test",
                   server=ServerModel(1, 0.0, 1, 0, 1, ((1, 10.0),), overhead_ms=20.0))  # fmt: skip
    steps = from_plan(plan, 500.0)
    base = simulate_fleet(plan, [PROFILE], steps, FleetOptions(500.0, seed=3))[1][0]
    over = simulate_fleet(plan, [slow], steps, FleetOptions(500.0, seed=3))[1][0]
    assert over.latency_ms == pytest.approx(base.latency_ms + 20.0)


def test_replicas_share_a_model_by_planned_rate() -> None:
    plan = _plan(("s1", (("a", 30.0),)), ("s2", (("a", 10.0), ("b", 5.0))))
    steps = steady({"a": 40.0, "b": 5.0}, 500.0)
    arrivals, (one, two) = simulate_fleet(plan, [PROFILE], steps, FleetOptions(500.0, seed=1))
    a = arrivals.names.index("a")
    assert (one.model == a).sum() / 500 == pytest.approx(30.0, rel=0.05)
    assert (two.model == a).sum() / 500 == pytest.approx(10.0, rel=0.08)
    document = build_document(plan, arrivals, [one, two], FleetOptions(500.0), {})
    rows = {row["name"]: row for row in document["models"]}
    assert rows["a"]["requests"] == (one.model == a).sum() + (two.model == a).sum()
    assert {"p50_ms", "p90_ms", "p99_ms"} <= set(document["servers"][0])


def test_the_router_stage_queues_the_whole_fleet() -> None:
    """A router at 1 ms per request and 900 req/s over 3 servers (rho 0.9) adds the M/D/1
    wait of the router to every server's latency."""
    plan = _plan(*((f"s{k}", ((f"m{k}", 300.0),)) for k in range(3)))
    fast = Profile("k", "c5.large", 1.0, 80.0, 50.0, "test",
                   server=ServerModel(8, 0.0, 1, 0, 8, ((1, 0.1),)))  # fmt: skip
    steps = from_plan(plan, 200.0)
    plain = simulate_fleet(plan, [fast], steps, FleetOptions(200.0, seed=2))[1]
    routed = simulate_fleet(plan, [fast], steps, FleetOptions(200.0, router_ms=1.0, seed=2))[1]
    extra = (
        np.concatenate([o.latency_ms for o in routed]).mean()
        - np.concatenate([o.latency_ms for o in plain]).mean()
    )
    assert extra == pytest.approx(1.0 + 0.9 * 1.0 / (2 * 0.1), rel=0.1)


def test_a_profile_without_a_server_block_is_named() -> None:
    plan = _plan(("s1", (("a", 1.0),)))
    bare = Profile("k", "c5.large", 1.0, 80.0, 50.0, "hand")
    with pytest.raises(ConfigError, match=r"s1: the profile of k on c5\.large has no 'server'"):
        simulate_fleet(plan, [bare], from_plan(plan, 1.0), FleetOptions(1.0))
    with pytest.raises(ConfigError, match="have demand but no server: zz"):
        simulate_fleet(plan, [PROFILE], steady({"zz": 1.0}, 1.0), FleetOptions(1.0))


def test_a_trace_steps_rates(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("t_s,model,rps\n0,a,10\n50,a,100\n20,b,5\n")
    steps = read_trace(trace, 100.0)
    assert steps["a"] == [(0.0, 50.0, 10.0), (50.0, 100.0, 100.0)]
    assert steps["b"] == [(20.0, 100.0, 5.0)]
    trace.write_text("t_s,model,rps\nx,a,1\n-1,a,2\n")
    with pytest.raises(ConfigError) as caught:
        read_trace(trace, 10.0)
    assert len(caught.value.problems) == 2


def test_each_server_draws_the_spread_of_its_own_rate() -> None:
    """A spread table (rate -> CV): a server at 20 req/s simulates with the light spread, one
    at 70 req/s with the heavy one, exactly as one fixed CV of each would."""
    table = replace(BLOCK, service_cv_by_rate=((20.0, 0.0), (70.0, 2.0)))
    plan = _plan(("light", (("a", 20.0),)), ("heavy", (("b", 70.0),)))
    steps = from_plan(plan, 500.0)

    def p90s(block: ServerModel) -> list[float]:
        profile = Profile("k", "c5.large", 1.0, 80.0, 50.0, "test", server=block)
        outcomes = simulate_fleet(plan, [profile], steps, FleetOptions(500.0, seed=5))[1]
        return [float(np.percentile(o.latency_ms, 90)) for o in outcomes]

    light, heavy = p90s(table)
    assert light == pytest.approx(p90s(BLOCK)[0], rel=0.05)
    assert heavy == pytest.approx(p90s(replace(BLOCK, service_cv=2.0))[1], rel=0.05)
    assert heavy > 2 * p90s(BLOCK)[1]
