"""deploy --follow's observation: each model's rate smoothed so that demand that rises is
followed at once and demand that falls only once two intervals agree."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from inferpack.deploy.follow import Controller, FollowConfig
from inferpack.deploy.local import LocalFleetConfig
from inferpack.plan.formats import ModelShare, Plan, PlanSummary, ServerPlan
from inferpack.plan.problem import PlanOptions
from inferpack.router.demand import ModelDemand

PLAN = Plan(
    PlanSummary(50.0, "test", 0.0, 1.0, 1.0, 0.0),
    (
        ServerPlan("s-001", "t", 1.0, (ModelShare("a", "k", 5.0), ModelShare("b", "k", 5.0)),
                   100.0, 0.1, 0.1, None),
        ServerPlan("s-002", "t", 1.0, (ModelShare("c", "k2", 1.0),), 100.0, 0.1, 0.1, None),
    ),
)  # fmt: skip


class Meter:
    def __init__(self) -> None:
        self.rates: dict[str, float] = {}

    def snapshot(self) -> list[ModelDemand]:
        return [ModelDemand(m, "k", 1, 0, r, 1.0, 1.0) for m, r in sorted(self.rates.items())]


def _controller(meter: Meter) -> Controller:
    follow = FollowConfig(PLAN, (), (), PlanOptions(slo_p90_ms=50.0), {}, "repo")
    router: Any = SimpleNamespace(meter=meter, controller={})
    return Controller(
        follow, [], router, fleet=LocalFleetConfig(), log_dir=Path("."), echo=lambda _: None
    )


def test_rising_demand_is_followed_at_once_and_falling_after_two_intervals() -> None:
    meter = Meter()
    controller = _controller(meter)
    meter.rates = {"a": 10.0, "b": 5.0}  # c got no request: 0 req/s, still planned
    assert [(d.model, d.kind, d.rps) for d in controller.demand()] == [
        ("a", "k", 10.0), ("b", "k", 5.0), ("c", "k2", 0.0)
    ]  # fmt: skip
    meter.rates = {"a": 2.0, "b": 8.0, "c": 3.0}
    assert {d.model: d.rps for d in controller.demand()} == {"a": 10.0, "b": 8.0, "c": 3.0}
    meter.rates = {"a": 2.0, "b": 1.0, "c": 3.0}
    assert {d.model: d.rps for d in controller.demand()} == {"a": 2.0, "b": 8.0, "c": 3.0}
    meter.rates = {"a": 2.0, "b": 1.0}
    assert {d.model: d.rps for d in controller.demand()} == {"a": 2.0, "b": 1.0, "c": 3.0}
