"""The seeds' fleet from the example profiles file, priced from the packaged catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferpack.bench.catalog import Catalog
from inferpack.plan.formats import Demand, read_profiles
from inferpack.plan.problem import PlanOptions, server_types_from_catalog
from inferpack.plan.solve import make_plan

EXAMPLE = Path(__file__).parents[2] / "examples" / "fleet" / "seeds-profiles.yaml"
# 3,040 models sharing the fleet's 6,230 req/s; the seeds ran at P90 66 ms against a 100 ms
# target, so the measured capacity is used whole (compute cap 1.0).
DEMAND = [Demand(f"bert-{i:04d}", "bert-base", 6230 / 3040) for i in range(3040)]
OPTIONS = PlanOptions(slo_p90_ms=100, max_compute_utilization=1.0, time_limit_s=5)


def test_inf1_6xlarge_alone_is_the_seeds_fleet() -> None:
    profiles = read_profiles([EXAMPLE])
    types = server_types_from_catalog(Catalog.load(None), ["inf1.6xlarge"])
    plan = make_plan(profiles, DEMAND, types, OPTIONS)
    assert plan.totals["servers"] == 40
    assert plan.totals["usd_per_hour"] == pytest.approx(47.2)
    assert plan.totals["usd_per_model_hour"] == pytest.approx(0.0155, abs=5e-5)


def test_mixed_plan_is_no_dearer_than_any_type_alone() -> None:
    profiles = read_profiles([EXAMPLE])
    names = {p.instance_type for p in profiles}
    plan = make_plan(
        profiles, DEMAND, server_types_from_catalog(Catalog.load(None), names), OPTIONS
    )
    alone = {row["instance_type"]: row for row in plan.alternatives}
    assert set(alone) == names
    assert alone["inf1.6xlarge"]["usd_per_hour"] == pytest.approx(47.2)
    for row in alone.values():
        assert plan.totals["usd_per_hour"] <= row["usd_per_hour"] + 1e-9
    assert plan.plan.lower_bound_usd_per_hour <= plan.totals["usd_per_hour"]
