"""Request parameters the runtime acts on: timeout -> deadline; scheduling options refused."""

from __future__ import annotations

import asyncio

import pytest

from inferpack.errors import DeadlineExceededError, InvalidInputError
from inferpack.runtime.request_parameters import request_deadline, request_timeout_us


@pytest.mark.parametrize(
    ("parameters", "expected_us"),
    [
        ({}, None),
        ({"timeout": 0}, None),  # Triton: 0 is no timeout
        ({"timeout": 1500}, 1500),
        ({"binary_data_output": True, "timeout": 7}, 7),
        ({"priority": 0, "sequence_id": 0, "sequence_start": False, "sequence_end": False}, None),
        ({"sequence_id": ""}, None),
    ],
)
def test_accepted_parameters(parameters: dict[str, object], expected_us: int | None) -> None:
    assert request_timeout_us(parameters) == expected_us


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"timeout": -1}, "timeout=-1 must be a non-negative integer"),
        ({"timeout": 1.5}, "timeout=1.5 must be"),
        ({"timeout": True}, "timeout=True must be"),
        ({"timeout": "100"}, "timeout='100' must be"),
        ({"priority": 2}, "priority=2 is not supported: inferpack has no priority levels"),
        ({"sequence_id": 9}, "sequence_id=9 is not supported: inferpack has no sequence batcher"),
        ({"sequence_id": "s"}, "sequence_id='s' is not supported"),
        ({"sequence_start": True}, "sequence_start=True is not supported"),
        ({"sequence_end": 1}, "sequence_end=1 is not supported"),
    ],
)
def test_refused_parameters(parameters: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        request_timeout_us(parameters)
    assert message in str(raised.value)


async def test_no_timeout_bounds_nothing() -> None:
    async with request_deadline(None, "m") as deadline_s:
        assert deadline_s is None


async def test_passed_deadline_cancels_the_work_and_names_the_timeout() -> None:
    never = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline_s: float | None = None
    with pytest.raises(DeadlineExceededError, match="'m': the request's timeout of 2000 us"):
        async with asyncio.timeout(5.0):  # hang guard only
            async with request_deadline(2000, "m") as deadline_s:
                assert deadline_s is not None and deadline_s > loop.time()
                await never.wait()
    assert deadline_s is not None and loop.time() >= deadline_s


async def test_deadline_error_from_inside_gets_the_timeout_message() -> None:
    with pytest.raises(DeadlineExceededError, match="timeout of 60000000 us"):
        async with request_deadline(60_000_000, "m"):
            raise DeadlineExceededError("model 'm': the request's deadline passed in the queue")


async def test_a_timeout_error_that_is_not_the_deadline_passes_through() -> None:
    with pytest.raises(TimeoutError, match="backend"):
        async with request_deadline(60_000_000, "m"):
            raise TimeoutError("backend")
