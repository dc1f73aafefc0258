"""A profile's server block: the spread by rate, read, written back and interpolated."""

from __future__ import annotations

import pytest

from inferpack.plan.server_model import ServerModel, parse_server_model, server_model_to_dict

RAW = {
    "workers": 2,
    "frontend_ms": 0.25,
    "overhead_ms": 1.0,
    "max_batch_size": 8,
    "max_queue_delay_us": 0,
    "instances": 1,
    "batch_service_ms": {1: 1.5, 8: 6.0},
    "service_cv": 1.25,
    "service_cv_by_rate": {400: 1.5, 200: 0.5},
}


def test_the_spread_table_is_read_sorted_and_written_back() -> None:
    problems: list[str] = []
    block = parse_server_model(RAW, "p", problems)
    assert problems == [] and block is not None
    assert block.service_cv_by_rate == ((200.0, 0.5), (400.0, 1.5))
    again = parse_server_model(server_model_to_dict(block), "p", problems)
    assert again == block and problems == []


def test_without_a_table_one_spread_holds_at_every_rate() -> None:
    raw = {k: v for k, v in RAW.items() if k != "service_cv_by_rate"}
    block = parse_server_model(raw, "p", [])
    assert block is not None and block.service_cv_by_rate == ()
    assert "service_cv_by_rate" not in server_model_to_dict(block)
    assert block.cv_at(1.0) == block.cv_at(1e6) == 1.25


@pytest.mark.parametrize(
    ("rate", "cv"), [(50.0, 0.5), (200.0, 0.5), (300.0, 1.0), (350.0, 1.25), (900.0, 1.5)]
)
def test_the_spread_is_interpolated_and_held_at_the_ends(rate: float, cv: float) -> None:
    block = ServerModel(1, 0.0, 1, 0.0, 1, ((1, 1.0),), service_cv_by_rate=((200.0, 0.5),
                                                                         (400.0, 1.5)))  # fmt: skip
    assert block.cv_at(rate) == pytest.approx(cv)


@pytest.mark.parametrize("table", [{0: 1.0}, {100: -1}, {"x": 1.0}, {100: True}, [], {}])
def test_a_bad_spread_table_is_named(table: object) -> None:
    problems: list[str] = []
    parse_server_model({**RAW, "service_cv_by_rate": table}, "profiles.yaml[0]", problems)
    assert problems and all("service_cv_by_rate" in p for p in problems), problems
    assert all(p.startswith("profiles.yaml[0]") for p in problems)
