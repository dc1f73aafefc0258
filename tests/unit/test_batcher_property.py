"""Property: whatever the policy, the executor and the order of events, the batcher answers
every request exactly once, to its own caller, from well-formed batches, and never hangs."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.batching import BatchPolicy, DynamicBatcher, QueuedItem
from inferpack.errors import (
    DeadlineExceededError,
    InvalidInputError,
    OverloadedError,
    UnavailableError,
)

Result = tuple[str, int]
Items = list[QueuedItem[int, Result]]

# A failure, not a timing assumption: a scenario needs milliseconds; only a hang reaches this.
HANG_GUARD_S = 2.0
BEHAVIOURS = ("ok", "slow", "raise", "short", "long", "cancel_raise", "cancel_task")
CANCELLED_BEHAVIOURS = ("cancel_raise", "cancel_task")


@dataclass(frozen=True)
class Submit:
    rows: int
    key: str
    deadline_offset_s: float | None


@dataclass(frozen=True)
class Cancel:
    index: int  # of an accepted request, modulo their count


@dataclass(frozen=True)
class Await:
    index: int  # of an accepted request, modulo their count: lets time pass until it is done


@dataclass(frozen=True)
class Yield:
    steps: int  # event loop turns


Operation = Submit | Cancel | Await | Yield


@dataclass(frozen=True)
class Scenario:
    policy: BatchPolicy
    instances: int
    operations: list[Operation]
    close_at: int | None  # close() before this operation (None: only at the end)
    behaviours: list[str]  # the n-th batch behaves as behaviours[n % len]


# Weights by repetition (sampled_from draws each entry alike): mostly submits of rows that
# fit, same keys and no deadline, so that batches fill and requests meet in them.
KINDS = ("submit",) * 6 + ("too_many_rows", "cancel", "await", "yield", "yield")
KEYS = ("a", "a", "b")
# Seconds from submit: None (no deadline), already passed, due while queued, or far away.
DEADLINE_OFFSETS_S = (None, None, None, -0.001, 0.0, 0.0005, 0.002, 0.01, 60.0)


@st.composite
def operations(draw: st.DrawFn, max_rows: int) -> Operation:
    kind = draw(st.sampled_from(KINDS))
    if kind in ("submit", "too_many_rows"):
        # Mostly one or two rows, so that several requests share a batch.
        rows = min(max_rows, draw(st.sampled_from([1, 1, 1, 2]) | st.integers(1, max_rows)))
        if kind == "too_many_rows":
            rows = max_rows + 1
        key = draw(st.sampled_from(KEYS))
        return Submit(rows, key, draw(st.sampled_from(DEADLINE_OFFSETS_S)))
    if kind == "yield":
        return Yield(draw(st.integers(1, 5)))
    index = draw(st.integers(0, 100))
    return Cancel(index) if kind == "cancel" else Await(index)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    max_rows = draw(st.integers(1, 8))
    policy = BatchPolicy(
        max_batch_rows=max_rows,
        max_queue_delay_s=draw(st.sampled_from([0.0, 0.0005, 0.002])),
        preferred_rows=tuple(sorted(draw(st.sets(st.integers(1, max_rows), max_size=3)))),
        max_queue_size=draw(st.sampled_from([1, 2, 4, 64, 64, 64])),
        combine_requests=draw(st.booleans()),
    )
    steps = draw(st.lists(operations(max_rows), min_size=10, max_size=40))
    close_early = draw(st.booleans())  # else close() only after the last operation
    return Scenario(
        policy=policy,
        instances=draw(st.integers(1, 3)),
        operations=steps,
        close_at=draw(st.sampled_from(range(len(steps)))) if close_early else None,
        behaviours=draw(st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=8)),
    )


@dataclass
class Request:
    payload: int
    deadline_s: float | None
    future: asyncio.Future[Result]
    cancelled_by_test: bool = False


@dataclass
class FakeExecutor:
    """Behaves per batch as the scenario says; checks each batch as it arrives."""

    policy: BatchPolicy
    behaviours: list[str]
    executed: dict[int, str] = field(default_factory=dict)  # payload -> its batch's behaviour
    busy: set[int] = field(default_factory=set)
    count: itertools.count[int] = field(default_factory=itertools.count)

    async def __call__(self, instance: int, items: Items) -> list[Result]:
        behaviour = self.behaviours[next(self.count) % len(self.behaviours)]
        self._check(instance, items)
        for item in items:
            self.executed[item.payload] = behaviour
        self.busy.add(instance)
        try:
            return await self._behave(behaviour, items)
        finally:
            self.busy.discard(instance)

    def _check(self, instance: int, items: Items) -> None:
        assert instance not in self.busy, f"instance {instance} got a second batch"
        assert items, "empty batch"
        assert sum(item.rows for item in items) <= self.policy.max_batch_rows
        assert len({item.key for item in items}) == 1, "keys mixed in one batch"
        assert self.policy.combine_requests or len(items) == 1
        for item in items:
            assert item.payload not in self.executed, f"request {item.payload} ran twice"
            assert not item.future.done(), "a cancelled or answered request was run"
            assert item.deadline_s is None or item.deadline_s > item.dispatched_at, (
                "a request past its deadline was dispatched"
            )

    async def _behave(self, behaviour: str, items: Items) -> list[Result]:
        results = [("result", item.payload) for item in items]
        if behaviour == "slow":
            await asyncio.sleep(0.001)  # lets deadlines and queue delays pass meanwhile
        elif behaviour == "raise":
            raise ValueError("model failed")
        elif behaviour == "short":
            return results[:-1]
        elif behaviour == "long":
            return [*results, ("result", -1)]
        elif behaviour == "cancel_raise":
            raise asyncio.CancelledError
        elif behaviour == "cancel_task":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)
        return results


async def _play(scenario: Scenario) -> None:
    loop = asyncio.get_running_loop()
    execute = FakeExecutor(scenario.policy, scenario.behaviours)
    batcher: DynamicBatcher[int, Result] = DynamicBatcher(
        "m", scenario.policy, execute, scenario.instances
    )
    batcher.start()
    requests: list[Request] = []
    closed = False
    for payload, operation in enumerate(scenario.operations):
        if payload == scenario.close_at:
            closed = True
            await batcher.close()
        if isinstance(operation, Submit):
            deadline_s = None
            if operation.deadline_offset_s is not None:
                deadline_s = loop.time() + operation.deadline_offset_s
            request = _submit(batcher, payload, operation, deadline_s, closed)
            if request is not None:
                requests.append(request)
        elif isinstance(operation, Cancel) and requests:
            request = requests[operation.index % len(requests)]
            request.cancelled_by_test |= request.future.cancel()
        elif isinstance(operation, Await) and requests:
            await asyncio.wait({requests[operation.index % len(requests)].future})
        elif isinstance(operation, Yield):
            for _ in range(operation.steps):
                await asyncio.sleep(0)
    await batcher.close()
    assert batcher.queued == 0 and batcher.running == 0
    for request in requests:
        _check_answer(request, execute.executed)


def _submit(
    batcher: DynamicBatcher[int, Result],
    payload: int,
    operation: Submit,
    deadline_s: float | None,
    closed: bool,
) -> Request | None:
    """Submit; check that a refusal is the one the contract names for this state."""
    queue_full = batcher.queued >= batcher.policy.max_queue_size
    try:
        future = batcher.submit(payload, operation.rows, operation.key, deadline_s)
    except UnavailableError:
        assert closed
        return None
    except InvalidInputError:
        assert operation.rows > batcher.policy.max_batch_rows
        return None
    except OverloadedError:
        assert queue_full
        return None
    assert not closed and not queue_full and operation.rows <= batcher.policy.max_batch_rows
    return Request(payload, deadline_s, future)


def _check_answer(request: Request, executed: dict[int, str]) -> None:
    future, payload = request.future, request.payload
    assert future.done(), f"request {payload} was never answered"
    if request.cancelled_by_test:
        assert future.cancelled()
        return
    assert not future.cancelled(), f"the batcher cancelled request {payload}"
    behaviour = executed.get(payload)
    error = future.exception()
    if error is None:
        assert future.result() == ("result", payload), "an answer reached the wrong request"
        assert behaviour in ("ok", "slow")
    elif isinstance(error, DeadlineExceededError):
        assert request.deadline_s is not None and behaviour is None
    elif isinstance(error, UnavailableError):
        assert behaviour in CANCELLED_BEHAVIOURS, f"request {payload}: {error}"
    elif isinstance(error, ValueError):
        assert behaviour == "raise"
    else:
        assert isinstance(error, RuntimeError) and behaviour in ("short", "long"), repr(error)
        assert "results" in str(error)


async def _play_bounded(scenario: Scenario) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        await _play(scenario)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_every_request_is_answered_once_from_well_formed_batches(scenario: Scenario) -> None:
    asyncio.run(_play_bounded(scenario))
