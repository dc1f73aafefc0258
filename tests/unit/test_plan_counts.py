"""Profiles by model count: read at the count a server holds, by the planner and simulate."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from inferpack.errors import ConfigError
from inferpack.plan.counts import ProfileFamily, families
from inferpack.plan.formats import (
    Demand,
    ModelShare,
    Plan,
    PlanSummary,
    Profile,
    RatePoint,
    ServerPlan,
    parse_profiles,
    profile_to_dict,
    read_profiles,
)
from inferpack.plan.problem import PlanOptions, ServerType, build_problem
from inferpack.plan.server_model import ServerModel
from inferpack.plan.solve import make_plan
from inferpack.profile.output import ProfilesFile, merged
from inferpack.simulate.fleet import server_parts
from tests.unit.test_plan_solver import check

BOX = ServerType("box", 1.0, 64_000.0)


def _entry(count: int | None, capacity: float, p90_ms: float = 10.0, **more: object) -> Profile:
    return Profile(
        "cnn",
        "box",
        10.0,
        capacity,
        50.0,
        "test",
        models_per_server=count,
        **more,  # type: ignore[arg-type]
    )


FAMILY = [_entry(1, 1000.0), _entry(4, 800.0), _entry(16, 600.0), _entry(64, 300.0)]


def test_family_reads_each_count_conservatively_and_interpolates_capacity() -> None:
    [family] = families(reversed(FAMILY)).values()
    assert family.counts == [1, 4, 16, 64]
    assert family.at(1).models_per_server == 1
    assert family.at(3).models_per_server == 4  # the smallest count measured >= 3
    assert family.at(16).models_per_server == 16
    assert family.at(500).models_per_server == 64
    assert family.capacity_at(4, 50.0) == 800.0
    assert family.capacity_at(8, 50.0) == pytest.approx(700.0)  # halfway in log(count)
    assert family.capacity_at(32, 50.0) == pytest.approx(450.0)
    assert family.capacity_at(1000, 50.0) == 300.0
    assert family.extrapolation(64) is None
    note = family.extrapolation(100)
    assert note is not None and "up to 100 models, profiled up to 64" in note


def test_an_uncounted_profile_reads_the_same_at_every_count() -> None:
    family = ProfileFamily((_entry(None, 500.0),))
    assert family.at(1000).capacity_rps == 500.0
    assert family.capacity_at(1000, 50.0) == 500.0
    assert family.extrapolation(1000) is None


def test_capacity_never_above_what_the_larger_count_met() -> None:
    """Where the entry above a count met no rate at the SLO, nothing is interpolated."""
    failing = replace(_entry(16, 600.0), points=(RatePoint(100.0, 100.0, 20.0, 90.0, 95.0, 0.0),))
    family = ProfileFamily((_entry(4, 800.0), failing))
    assert family.capacity_at(8, 50.0) is None


def test_profiles_files_hold_one_entry_per_count() -> None:
    data = {"profiles": [profile_to_dict(p) for p in FAMILY]}
    assert [p.models_per_server for p in parse_profiles(data, "f")] == [1, 4, 16, 64]
    twice = {"profiles": [profile_to_dict(FAMILY[0])] * 2}
    with pytest.raises(ConfigError, match=r"cnn on box with 1 models repeats profiles\[0\]"):
        parse_profiles(twice, "f")
    mixed = {"profiles": [profile_to_dict(_entry(None, 5.0)), profile_to_dict(FAMILY[1])]}
    with pytest.raises(ConfigError, match="each needs its models_per_server"):
        parse_profiles(mixed, "f")


def test_profiles_split_over_files_and_mixed_counts_are_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(yaml.safe_dump({"profiles": [profile_to_dict(FAMILY[0])]}))
    second.write_text(yaml.safe_dump({"profiles": [profile_to_dict(FAMILY[1])]}))
    assert len(read_profiles([first, second])) == 2
    second.write_text(yaml.safe_dump({"profiles": [profile_to_dict(_entry(None, 5.0))]}))
    with pytest.raises(ConfigError, match="each needs its models_per_server"):
        read_profiles([first, second])


def test_a_new_measurement_replaces_only_its_count() -> None:
    existing = ProfilesFile(tuple(FAMILY))
    again = _entry(4, 750.0)
    updated = merged(existing, again)
    assert [(p.models_per_server, p.capacity_rps) for p in updated] == [
        (1, 1000.0), (4, 750.0), (16, 600.0), (64, 300.0),
    ]  # fmt: skip
    assert len(merged(existing, _entry(8, 1.0))) == 5
    # An uncounted entry and a counted one cannot live together: the new one replaces it.
    assert merged(ProfilesFile((_entry(None, 5.0),)), again) == [again]


def test_planner_packs_at_the_count_servers_hold() -> None:
    """Memory lets a server hold every model; capacity is read at that count (40 models:
    between 16 and 64), not at the 1-model measurement."""
    demand = [Demand(f"m{i:02d}", "cnn", 10.0) for i in range(40)]
    options = PlanOptions(slo_p90_ms=50.0)
    problem = build_problem(FAMILY, demand, [BOX], options)
    expected = 600.0 + (math.log(40) - math.log(16)) / (math.log(64) - math.log(16)) * -300.0
    assert problem.capacity_rps[("cnn", "box")] == pytest.approx(expected)
    assert problem.profiles[("cnn", "box")].models_per_server == 64
    plan = make_plan(FAMILY, demand, [BOX], options)
    check(plan, FAMILY, demand, [BOX], options)
    # 400 req/s of compute at ~402 req/s x 0.8 per server: two servers, not one.
    assert len(plan.servers) == 2
    assert not any("extrapolated" in note for note in plan.plan.notes)


def test_planner_states_an_extrapolation_past_the_largest_count() -> None:
    few = FAMILY[:2]  # measured at 1 and 4 models
    demand = [Demand(f"m{i:02d}", "cnn", 1.0) for i in range(10)]
    plan = make_plan(few, demand, [BOX], PlanOptions(slo_p90_ms=50.0))
    [note] = [n for n in plan.plan.notes if "extrapolated" in n]
    assert "up to 10 models, profiled up to 4" in note


def test_max_models_bounds_the_packing_count() -> None:
    capped = [replace(p, max_models=4) for p in FAMILY]
    demand = [Demand(f"m{i:02d}", "cnn", 10.0) for i in range(40)]
    problem = build_problem(capped, demand, [BOX], PlanOptions(slo_p90_ms=50.0))
    assert problem.capacity_rps[("cnn", "box")] == 800.0


def test_predicted_p90_read_at_the_servers_count() -> None:
    """Without server blocks, a server's p90 comes from the points of the entry measured
    with at least as many models as it holds."""
    points = {
        1: (RatePoint(100, 100, 1, 5.0, 6, 0), RatePoint(900, 900, 1, 9.0, 10, 0)),
        16: (RatePoint(100, 100, 1, 20.0, 22, 0), RatePoint(500, 500, 1, 40.0, 45, 0)),
    }
    entries = [
        _entry(1, 900.0, points=points[1]),
        _entry(16, 500.0, points=points[16]),
    ]
    demand = [Demand(f"m{i}", "cnn", 10.0) for i in range(10)]
    plan = make_plan(entries, demand, [BOX], PlanOptions(slo_p90_ms=50.0))
    [server] = plan.servers
    assert server.predicted_p90_ms == pytest.approx(20.0)  # 100 req/s on the 16-model curve


def _block(frontend_ms: float) -> ServerModel:
    return ServerModel(1, frontend_ms, 8, 0.0, 1, ((1, 1.0), (8, 4.0)))


def test_simulate_uses_the_block_measured_at_the_servers_count() -> None:
    entries = [_entry(1, 900.0, server=_block(0.1)), _entry(16, 500.0, server=_block(0.9))]
    by_key = families(entries)

    def server(count: int) -> ServerPlan:
        shares = tuple(ModelShare(f"m{i}", "cnn", 1.0) for i in range(count))
        return ServerPlan("s", "box", 1.0, shares, 1.0, 0.1, 0.1, None)

    assert server_parts(server(1), by_key)[0].frontend_ms == 0.1
    assert server_parts(server(2), by_key)[0].frontend_ms == 0.9
    assert server_parts(server(40), by_key)[0].frontend_ms == 0.9
    plan = Plan(PlanSummary(50.0, "x", 0.0, 1.0, 1.0, 0.0), (server(3),))
    assert plan.servers[0].models[0].kind == "cnn"
