"""The routing table and the least-outstanding picker, as pure objects (no sockets)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.errors import NotFoundError
from inferpack.router.table import (
    DOWN_FOR_S,
    Backend,
    BackendUnreachableError,
    Picker,
    RoutingTable,
    with_failover,
)

BACKENDS = tuple(
    Backend(f"s{i}", f"http://127.0.0.1:{10 + i}", f"127.0.0.1:{20 + i}") for i in range(4)
)
MODELS = ("a", "b", "c", "d")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _table(hosting: list[list[int]]) -> RoutingTable:
    """hosting[i]: indexes into MODELS that BACKENDS[i] serves."""
    return RoutingTable.from_hosts(
        (BACKENDS[i], [MODELS[m] for m in models]) for i, models in enumerate(hosting)
    )


def test_table_maps_models_to_their_hosts_in_plan_order() -> None:
    table = _table([[0, 1], [1], [2, 1]])
    assert table.replicas("a") == (BACKENDS[0],)
    assert table.replicas("b") == (BACKENDS[0], BACKENDS[1], BACKENDS[2])
    assert table.models == ("a", "b", "c")
    assert table.backends == BACKENDS[:3]
    with pytest.raises(NotFoundError, match="unknown model: 'zzz' is not found"):
        table.replicas("zzz")


def test_ties_go_round_robin_and_the_least_busy_replica_wins() -> None:
    picker = Picker(_table([[0], [0], [0]]))
    first = [picker.acquire("a") for _ in range(3)]
    assert first == list(BACKENDS[:3])  # all idle: one each, in turn
    picker.release(BACKENDS[1])
    assert picker.acquire("a") == BACKENDS[1]  # the only one with fewer outstanding


def test_a_backend_marked_down_is_skipped_while_a_replica_is_up() -> None:
    clock = Clock()
    picker = Picker(_table([[0], [0]]), clock=clock)
    picker.mark_down(BACKENDS[0])
    assert {picker.acquire("a") for _ in range(4)} == {BACKENDS[1]}
    clock.now += DOWN_FOR_S + 0.1
    assert picker.acquire("a") == BACKENDS[0]  # its turn again, and it is least busy


def test_release_without_acquire_is_a_bug() -> None:
    picker = Picker(_table([[0]]))
    with pytest.raises(AssertionError, match="s0"):
        picker.release(BACKENDS[0])


async def test_failover_moves_on_only_after_a_refused_connection() -> None:
    picker = Picker(_table([[0], [0]]))
    calls: list[Backend] = []

    async def refuse_first(backend: Backend) -> str:
        calls.append(backend)
        if len(calls) == 1:
            raise BackendUnreachableError(backend, backend.http_url, "refused", refused=True)
        return backend.name

    assert await with_failover(picker, "a", refuse_first) == calls[1].name
    assert calls[0] != calls[1]
    assert picker.is_down(calls[0])

    async def reset(backend: Backend) -> str:
        raise BackendUnreachableError(backend, backend.http_url, "reset", refused=False)

    with pytest.raises(BackendUnreachableError, match="reset"):
        await with_failover(picker, "a", reset)  # may have run: not retried
    assert set(picker.outstanding.values()) == {0}


async def test_a_broken_connection_moves_on_when_the_caller_allows_it() -> None:
    """retry_broken (inference: no side effects): a request lost with its server goes to
    the next replica; with none left the error stands."""
    picker = Picker(_table([[0], [0]]))
    calls: list[Backend] = []

    async def reset_first(backend: Backend) -> str:
        calls.append(backend)
        if len(calls) == 1:
            raise BackendUnreachableError(backend, backend.http_url, "reset", refused=False)
        return backend.name

    assert await with_failover(picker, "a", reset_first, retry_broken=True) == calls[1].name

    async def reset(backend: Backend) -> str:
        raise BackendUnreachableError(backend, backend.http_url, "reset", refused=False)

    with pytest.raises(BackendUnreachableError):
        await with_failover(picker, "a", reset, retry_broken=True)
    assert set(picker.outstanding.values()) == {0}


def test_a_held_backend_stays_out_until_unheld() -> None:
    """A restarting server: neither a refused connection's short mark nor an answer from
    it ends the hold; alone, it is still picked (an error beats no answer)."""
    clock = Clock()
    picker = Picker(_table([[0], [0]]), clock=clock)
    picker.hold(BACKENDS[0])
    picker.mark_down(BACKENDS[0])
    clock.now += DOWN_FOR_S + 1
    picker.mark_up(BACKENDS[0])
    assert picker.is_down(BACKENDS[0])
    assert {picker.acquire("a") for _ in range(4)} == {BACKENDS[1]}
    picker.unhold(BACKENDS[0])
    assert not picker.is_down(BACKENDS[0]) and picker.acquire("a") == BACKENDS[0]
    lone = Picker(_table([[0]]))
    lone.hold(BACKENDS[0])
    assert lone.acquire("a") == BACKENDS[0]


@settings(max_examples=60, deadline=None)
@given(
    hosting=st.lists(
        st.lists(st.integers(0, len(MODELS) - 1), min_size=1, max_size=3), min_size=1, max_size=4
    ),
    requests=st.lists(
        st.tuples(st.integers(0, len(MODELS) - 1), st.floats(0, 1), st.booleans()), max_size=40
    ),
    down=st.lists(st.integers(0, 3), max_size=3),
    rates=st.lists(st.floats(0.5, 50.0), min_size=4, max_size=4) | st.none(),
)
def test_every_pick_hosts_the_model_and_counts_return_to_zero(
    hosting: list[list[int]],
    requests: list[tuple[int, float, bool]],
    down: list[int],
    rates: list[float] | None,
) -> None:
    """Concurrent requests of random models, durations and failures (some refused), with
    and without planned shares (weights per backend)."""
    table = _table(hosting)
    if rates is not None:
        table = RoutingTable.from_hosts(
            ((BACKENDS[i], [MODELS[m] for m in models]) for i, models in enumerate(hosting)),
            {
                (MODELS[m], BACKENDS[i].name): rates[i]
                for i in range(len(hosting))
                for m in range(4)
            },
        )
    picker = Picker(table)
    for index in down:
        if index < len(hosting):
            picker.mark_down(BACKENDS[index])

    async def one(model: str, hold: float, refuse: bool) -> None:
        async def call(backend: Backend) -> None:
            assert backend in table.replicas(model)
            assert picker.outstanding[backend] >= 1
            await asyncio.sleep(hold / 1000)
            if refuse:
                raise BackendUnreachableError(backend, "x", "refused", refused=True)

        try:
            await with_failover(picker, model, call)
        except BackendUnreachableError:
            assert refuse
        except NotFoundError:
            assert model not in table.models

    async def scenario() -> None:
        await asyncio.gather(*(one(MODELS[m], hold, refuse) for m, hold, refuse in requests))

    asyncio.run(scenario())
    assert all(count == 0 for count in picker.outstanding.values()), picker.outstanding


@settings(max_examples=60, deadline=None)
@given(replicas=st.integers(1, 4), held=st.lists(st.integers(0, 3), max_size=8))
def test_the_pick_has_the_fewest_outstanding(replicas: int, held: list[int]) -> None:
    picker = Picker(_table([[0]] * replicas))
    for index in held:
        if index < replicas:
            picker.outstanding[BACKENDS[index]] += 1
    before = dict(picker.outstanding)
    chosen = picker.acquire("a")
    assert before[chosen] == min(before.values())
    assert picker.outstanding[chosen] == before[chosen] + 1


def test_planned_shares_weight_the_replicas() -> None:
    """Replicas planned at 30 and 10 req/s get 3 of every 4 requests and 1 (exactly, in
    order); least outstanding only breaks ties; a down replica is skipped meanwhile."""
    table = RoutingTable.from_hosts(
        [(BACKENDS[0], ["a"]), (BACKENDS[1], ["a"]), (BACKENDS[2], ["b"])],
        {("a", "s0"): 30.0, ("a", "s1"): 10.0, ("b", "s2"): 5.0},
    )
    assert table.weights("a") == (30.0, 10.0) and table.weights("b") is None
    clock = Clock()
    picker = Picker(table, clock=clock)
    picks = []
    for _ in range(400):
        backend = picker.acquire("a")
        picks.append(backend)
        picker.release(backend)
    assert picks.count(BACKENDS[0]) == 300 and picks.count(BACKENDS[1]) == 100
    picker.mark_down(BACKENDS[0])
    assert {picker.acquire("a") for _ in range(3)} == {BACKENDS[1]}
    even = RoutingTable.from_hosts(
        [(BACKENDS[0], ["a"]), (BACKENDS[1], ["a"])], {("a", "s0"): 5.0, ("a", "s1"): 5.0}
    )
    assert even.weights("a") is None  # even shares: least outstanding, as without a plan
    with pytest.raises(ValueError, match="one positive weight per replica"):
        RoutingTable({"a": [BACKENDS[0]]}, {"a": [1.0, 2.0]})


def test_weighted_ties_go_to_the_least_outstanding() -> None:
    table = RoutingTable({"a": list(BACKENDS[:3])}, {"a": [2.0, 2.0, 1.0]})
    picker = Picker(table)
    first = picker.acquire("a")  # s0 and s1 tie on share: both idle, plan order
    assert first == BACKENDS[0]
    assert picker.acquire("a") == BACKENDS[1]  # s0 is now ahead of its share


@settings(max_examples=40, deadline=None)
@given(
    tables=st.lists(
        st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=3), min_size=1, max_size=4),
        min_size=1,
        max_size=4,
    ),
    requests=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), max_size=40),
)
def test_swapped_tables_answer_every_request_once_on_a_replica_of_its_table(
    tables: list[list[list[int]]], requests: list[tuple[int, int]]
) -> None:
    """Requests run while the table is swapped under them (deploy --follow): each request
    is answered exactly once, by a replica of the table current when it was picked; the
    per-model in-flight counts say at every moment what a drain waits for; all reach 0."""
    picker = Picker(_table(tables[0]))
    answered: list[int] = []
    in_flight: dict[tuple[Backend, str], int] = {}

    async def one(number: int, model: str, hold_ms: int) -> None:
        async def call(backend: Backend) -> int:
            assert backend in picker.table.replicas(model)
            key = (backend, model)
            in_flight[key] = in_flight.get(key, 0) + 1
            assert picker.in_flight(backend, model) == in_flight[key]
            await asyncio.sleep(hold_ms / 1000)
            in_flight[key] -= 1
            return number

        try:
            answered.append(await with_failover(picker, model, call))
        except NotFoundError:
            assert model not in picker.table.models
            answered.append(number)

    async def swaps() -> None:
        for hosting in tables[1:]:
            await asyncio.sleep(0.001)
            picker.set_table(_table(hosting))

    async def scenario() -> None:
        calls = [one(n, MODELS[m], hold) for n, (m, hold) in enumerate(requests)]
        await asyncio.gather(swaps(), *calls)

    asyncio.run(scenario())
    assert sorted(answered) == list(range(len(requests)))
    assert all(count == 0 for count in picker.outstanding.values())
    assert all(picker.in_flight(b, m) == 0 for b in BACKENDS for m in MODELS)


def test_a_swap_restarts_the_shares_of_a_model_whose_replicas_changed() -> None:
    weighted = RoutingTable.from_hosts(
        [(BACKENDS[0], ["a"]), (BACKENDS[1], ["a"])], {("a", "s0"): 3.0, ("a", "s1"): 1.0}
    )
    picker = Picker(weighted)
    for _ in range(8):
        picker.release(picker.acquire("a"), "a")
    moved = RoutingTable.from_hosts(
        [(BACKENDS[1], ["a"]), (BACKENDS[2], ["a"])], {("a", "s1"): 1.0, ("a", "s2"): 3.0}
    )
    picker.set_table(moved)
    picks = [picker.acquire("a") for _ in range(4)]
    assert picks.count(BACKENDS[2]) == 3 and picks.count(BACKENDS[1]) == 1
    assert picker.in_flight(BACKENDS[2], "a") == 3 and picker.in_flight(BACKENDS[0]) == 0


def test_a_replica_back_from_a_hold_gets_its_share_not_every_request() -> None:
    table = RoutingTable.from_hosts(
        [(BACKENDS[0], ["a"]), (BACKENDS[1], ["a"])], {("a", "s0"): 1.0, ("a", "s1"): 2.0}
    )
    picker = Picker(table)
    picker.hold(BACKENDS[0])
    for _ in range(300):  # all to s1 while s0 restarts
        picker.release(picker.acquire("a"), "a")
    picker.unhold(BACKENDS[0])
    picks = []
    for _ in range(30):
        backend = picker.acquire("a")
        picks.append(backend)
        picker.release(backend, "a")
    assert picks.count(BACKENDS[0]) == 10 and picks.count(BACKENDS[1]) == 20
    reweighted = RoutingTable.from_hosts(
        [(BACKENDS[0], ["a"]), (BACKENDS[1], ["a"])], {("a", "s0"): 2.0, ("a", "s1"): 1.0}
    )
    picker.set_table(reweighted)  # same replicas, new shares: counted afresh
    picks = [picker.acquire("a") for _ in range(3)]
    assert picks.count(BACKENDS[0]) == 2
