from __future__ import annotations

import pytest

from inferpack.errors import OverloadedError
from inferpack.runtime.inflight import InflightBytes


def test_requests_past_the_cap_are_refused_until_bytes_are_given_back() -> None:
    budget = InflightBytes(100)
    first = budget.reserve(60)
    with budget.reserve(40):
        assert budget.in_flight_bytes == 100
        with pytest.raises(OverloadedError, match="100 bytes of requests in flight") as refused:
            budget.reserve(1)
        assert refused.value.retry_after_s > 0
    first.release()
    first.release()  # idempotent
    assert budget.in_flight_bytes == 0


def test_one_request_is_admitted_alone_whatever_its_size() -> None:
    budget = InflightBytes(10)
    with budget.reserve(0) as body:
        body.grow_to(1_000)  # a body of unannounced length, once read
        assert budget.in_flight_bytes == 1_000
        with pytest.raises(OverloadedError):
            budget.reserve(1)
    assert budget.in_flight_bytes == 0


def test_a_refused_growth_keeps_what_it_held() -> None:
    budget = InflightBytes(100)
    with budget.reserve(50), budget.reserve(10) as other:
        with pytest.raises(OverloadedError):
            other.grow_to(60)
        assert (other.nbytes, budget.in_flight_bytes) == (10, 60)
    assert budget.in_flight_bytes == 0
