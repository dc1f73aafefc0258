"""A model that raises fails only its own batch; a full queue answers 429."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.helpers import ServerThread


def _body(values: list[float]) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": values}]}


async def _post(session: aiohttp.ClientSession, url: str, body: object) -> tuple[int, dict]:
    async with session.post(url, json=body) as response:
        return response.status, await response.json()


async def test_model_exception_fails_exactly_its_batch(server: ServerThread) -> None:
    url = f"{server.url}/v2/models/poison/infer"
    poisoned = [[1.0, 2.0, 3.0, 4.0]] * 3 + [[-5000.0, 0.0, 0.0, 0.0]]
    clean = [[float(i), 1.0, 1.0, 1.0] for i in range(4)]
    async with aiohttp.ClientSession() as session:
        # max_batch_size 4 with a 3 s delay: each group of 4 concurrent requests is one batch.
        first = await asyncio.gather(*(_post(session, url, _body(v)) for v in poisoned))
        second = await asyncio.gather(*(_post(session, url, _body(v)) for v in clean))
        status, other = await _post(
            session,
            f"{server.url}/v2/models/tiny-mlp/infer",
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}
                ]
            },
        )

    assert [s for s, _ in first] == [500] * 4
    for _, payload in first:
        assert "poisoned input" in payload["error"]
        assert "batch of 4 request(s)" in payload["error"]
    assert [s for s, _ in second] == [200] * 4
    for values, (_, payload) in zip(clean, second, strict=True):
        assert payload["outputs"][0]["data"] == [2 * v for v in values]
    assert status == 200 and other["outputs"][0]["shape"] == [1, 4]


async def test_full_queue_answers_429_with_retry_after(server: ServerThread) -> None:
    # "slow": one instance, batch 1, 300 ms per request, queue of 2.
    url = f"{server.url}/v2/models/slow/infer"
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    async with aiohttp.ClientSession() as session:

        async def send() -> tuple[int, str | None, dict]:
            async with session.post(url, json=body) as response:
                return response.status, response.headers.get("Retry-After"), await response.json()

        results = await asyncio.gather(*(send() for _ in range(8)))
        async with session.get(f"{server.url}/v2/health/live") as response:
            assert response.status == 200

    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(429) >= 3, statuses
    assert set(statuses) == {200, 429}
    for status, retry_after, payload in results:
        if status == 429:
            assert retry_after is not None and int(retry_after) >= 1
            assert "queue is full" in payload["error"]
        else:
            assert payload["outputs"][0]["data"] == [1, 2, 3]
