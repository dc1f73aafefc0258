from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from inferpack.errors import OverloadedError, UnavailableError
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


def test_charges_from_many_threads_are_counted_exactly() -> None:
    """Decoding threads of one request charge its reservation at once (lock-protected)."""
    budget = InflightBytes(10**9)
    with budget.reserve(100) as request:

        def decode(_: int) -> None:
            for _ in range(1_000):
                request.add(3)
                request.add(-1)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(decode, range(8)))
        assert request.nbytes == budget.in_flight_bytes == 100 + 8 * 1_000 * 2
    assert budget.in_flight_bytes == 0


def test_a_charge_past_the_cap_is_refused_while_others_are_in_flight() -> None:
    budget = InflightBytes(1_000)
    with budget.reserve(10), budget.reserve(20) as upload:
        with pytest.raises(OverloadedError, match="retry later"):
            upload.add(5_000)  # its decoded pixels
        assert (upload.nbytes, budget.in_flight_bytes) == (20, 30)
    with budget.reserve(20) as alone:
        alone.add(5_000)  # nothing else in flight: admitted whatever its size
        assert budget.in_flight_bytes == 5_020


def test_a_released_reservation_takes_no_more_charges() -> None:
    """A decode still running when its request was answered or cancelled cannot leave
    bytes counted: its charge is refused and its give-back is a no-op."""
    budget = InflightBytes(1_000)
    request = budget.reserve(10)
    request.add(50)
    request.release()
    with pytest.raises(UnavailableError):
        request.add(50)
    request.add(-50)
    assert budget.in_flight_bytes == 0 and request.nbytes == 0
