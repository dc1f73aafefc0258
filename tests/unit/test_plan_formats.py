"""profiles.yaml, demand CSV and plan.yaml: round trips and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inferpack.errors import ConfigError
from inferpack.plan.formats import (
    Demand,
    ModelShare,
    Plan,
    PlanSummary,
    Profile,
    RatePoint,
    ServerPlan,
    parse_profiles,
    read_demand,
    read_plan,
    read_profiles,
    write_demand,
    write_plan,
    write_profiles,
)


def test_profiles_round_trip(tmp_path: Path) -> None:
    point = RatePoint(100.0, 99.5, 4.0, 9.0, 20.0, 0.0)
    profiles = [
        Profile("bert", "inf1.6xlarge", 300.0, 620.0, 100.0, "seeds", max_models=76),
        Profile("cnn", "c5.2xlarge", 0.2, 700.0, 50.0, "measured", points=(point,)),
    ]
    write_profiles(tmp_path / "p.yaml", profiles, {"machine": "test"})
    assert read_profiles([tmp_path / "p.yaml"]) == profiles
    assert yaml.safe_load((tmp_path / "p.yaml").read_text())["machine"] == "test"


def test_profile_problems_are_reported_together() -> None:
    data = {
        "profiles": [
            {"kind": "a", "instance_type": "t", "model_memory_mb": -1, "capacity_rps": "x",
             "slo_p90_ms": 100, "source": "s", "max_models": 0},
            {"kind": "", "instance_type": "t", "model_memory_mb": 1, "capacity_rps": 1,
             "slo_p90_ms": 1, "source": "s"},
        ]
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_profiles(data, "p.yaml")
    text = str(caught.value)
    for problem in (
        "model_memory_mb must be > 0",
        "capacity_rps must be a number",
        "max_models must be an integer >= 1",
        "kind must be a non-empty string",
    ):
        assert problem in text


def test_same_kind_and_type_in_two_files_is_refused(tmp_path: Path) -> None:
    profile = Profile("bert", "c5.2xlarge", 1.0, 1.0, 1.0, "s")
    write_profiles(tmp_path / "a.yaml", [profile])
    write_profiles(tmp_path / "b.yaml", [profile])
    with pytest.raises(ConfigError, match="also in"):
        read_profiles([tmp_path / "a.yaml", tmp_path / "b.yaml"])


def test_demand_round_trip_and_header(tmp_path: Path) -> None:
    demand = [Demand("m1", "bert", 2.5), Demand("m2", "cnn", 0.0)]
    write_demand(tmp_path / "d.csv", demand)
    assert read_demand(tmp_path / "d.csv") == demand
    (tmp_path / "bad.csv").write_text("name,rps\nm,1\n")
    with pytest.raises(ConfigError, match="header must start with model,kind,rps"):
        read_demand(tmp_path / "bad.csv")


def test_plan_round_trip_with_totals(tmp_path: Path) -> None:
    server = ServerPlan(
        "c5-2xlarge-001", "c5.2xlarge", 0.34, (ModelShare("m1", "cnn", 3.0),), 0.2, 0.05, 0.1, 4.5
    )
    plan = Plan(PlanSummary(100.0, "test", 0.1, 0.34, 0.34, 0.0, "optimal"), (server,))
    write_plan(tmp_path / "plan.yaml", plan)
    again = read_plan(tmp_path / "plan.yaml")
    assert again.servers == plan.servers
    assert again.totals == plan.totals == {
        "servers": 1, "usd_per_hour": 0.34, "usd_per_model_hour": 0.34, "models": 1,
        "replicas": 1, "rps": 3.0,
    }  # fmt: skip


def test_plan_round_trip_keeps_the_slowdown_fields(tmp_path: Path) -> None:
    """tolerated_slowdown per server and the plan's slowdown_margin survive a write and a
    read, and re-planning the plan (options_of) keeps its margin."""
    from inferpack.plan.incremental import options_of

    shares = (ModelShare("m1", "cnn", 3.0),)
    server = ServerPlan("s-001", "c5.2xlarge", 0.34, shares, 0.2, 0.05, 0.1, 4.5, 1.35)
    summary = PlanSummary(100.0, "test", 0.1, 0.34, 0.34, 0.0, "optimal", slowdown_margin=1.2)
    write_plan(tmp_path / "plan.yaml", Plan(summary, (server,)))
    again = read_plan(tmp_path / "plan.yaml")
    assert again.servers[0].tolerated_slowdown == 1.35
    assert again.plan.slowdown_margin == 1.2
    assert options_of(again.plan, 5.0).slowdown_margin == 1.2
    older = PlanSummary(100.0, "test", 0.1, 0.34, 0.34, 0.0)  # a plan written without it
    assert options_of(older, 5.0).slowdown_margin == 1.0


def test_plan_without_models_or_with_repeated_names_is_refused(tmp_path: Path) -> None:
    document = {
        "plan": {"slo_p90_ms": 100, "objective_usd_per_hour": 1.0},
        "servers": [
            {"name": "a", "instance_type": "t", "models": []},
            {"name": "a", "instance_type": "t", "models": [{"name": "m"}]},
        ],
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        read_plan(tmp_path / "plan.yaml")
    assert "servers[0]: has no models" in str(caught.value)
    assert "server name a repeats" in str(caught.value)


def test_demand_header_with_spaces_reads_every_row(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("model, kind, rps\na, bert, 1.5\n")
    assert read_demand(tmp_path / "d.csv") == [Demand("a", "bert", 1.5)]


def test_hand_edited_plan_with_non_numbers_names_each_field(tmp_path: Path) -> None:
    document = {
        "plan": {"slo_p90_ms": 100, "objective_usd_per_hour": 1.0},
        "servers": [
            {
                "name": "a",
                "instance_type": "t",
                "usd_per_hour": "cheap",
                "predicted_p90_ms": [3],
                "models": [{"name": "m", "rps": "lots"}],
            }
        ],
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        read_plan(tmp_path / "plan.yaml")
    text = str(caught.value)
    assert "usd_per_hour must be a number, got 'cheap'" in text
    assert "predicted_p90_ms must be a number" in text
    assert "models[0]: rps must be a number, got 'lots'" in text


def test_a_profile_server_block_round_trips_and_is_checked(tmp_path: Path) -> None:
    from inferpack.plan.server_model import ServerModel

    block = ServerModel(2, 0.25, 8, 2000.0, 1, ((1, 3.1), (8, 10.5)), (4, 8))
    profile = Profile("k", "c5.large", 1.0, 100.0, 50.0, "measured", server=block)
    write_profiles(tmp_path / "p.yaml", [profile])
    assert read_profiles([tmp_path / "p.yaml"]) == [profile]
    bad = {
        "kind": "k", "instance_type": "c5.large", "model_memory_mb": 1, "capacity_rps": 1,
        "slo_p90_ms": 1, "source": "x",
        "server": {"workers": 0, "frontend_ms": -1, "batch_service_ms": {0: 1, 2: -3}},
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_profiles({"profiles": [bad]}, "p.yaml")
    text = str(caught.value)
    assert "server.workers must be an integer >= 1" in text
    assert "server.frontend_ms must be a number >= 0" in text
    assert "batch_service_ms needs sizes >= 1 and ms > 0" in text
