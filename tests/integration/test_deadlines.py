"""The request ``timeout`` parameter (microseconds) through the real server, REST and gRPC.

A request whose timeout passes gets 504 / DEADLINE_EXCEEDED naming the timeout, whether it
was still queued or already running; the same request without a timeout succeeds.
Scheduling parameters inferpack lacks (priority, sequences) are refused with 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inferpack.config import ServerConfig
from tests.helpers import ServerThread, edit_model

MODEL = "sleep200"
SLEEP_MS = 200
DATA = [1.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def deadline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with one model: identity after 200 ms per batch, one instance."""
    from inferpack.repository.init import init_repository

    repo = tmp_path_factory.mktemp("deadline-repo")
    init_repository(repo, ["sleep"], seed=0)
    edit_model(
        repo,
        "sleep",
        MODEL,
        workload_options={"sleep_ms": SLEEP_MS},
        instances={"count": 1, "device": "cpu"},
    )
    thread = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


def _body(parameters: dict[str, object] | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": DATA}]
    }
    if parameters is not None:
        body["parameters"] = parameters
    return body


async def _post(
    session: aiohttp.ClientSession, server: ServerThread, body: dict[str, object]
) -> tuple[int, dict[str, object]]:
    async with session.post(f"{server.url}/v2/models/{MODEL}/infer", json=body) as response:
        return response.status, await response.json()


async def test_rest_timeout_answers_504_and_no_timeout_succeeds(
    deadline_server: ServerThread,
) -> None:
    async with aiohttp.ClientSession() as session:
        status, payload = await _post(session, deadline_server, _body({"timeout": 1000}))
        assert status == 504, payload
        assert "timeout of 1000 us" in str(payload["error"])
        status, payload = await _post(session, deadline_server, _body())
    assert status == 200, payload
    assert payload["outputs"][0]["data"] == DATA  # type: ignore[index]


async def test_queued_request_times_out_while_a_slow_batch_runs(
    deadline_server: ServerThread,
) -> None:
    async with aiohttp.ClientSession() as session:
        # One instance, 200 ms a batch: the request with a 50 ms timeout cannot be answered.
        slow = asyncio.create_task(_post(session, deadline_server, _body()))
        timed = asyncio.create_task(_post(session, deadline_server, _body({"timeout": 50_000})))
        (slow_status, _), (timed_status, timed_payload) = await asyncio.gather(slow, timed)
    assert slow_status == 200
    assert timed_status == 504, timed_payload
    assert "timeout of 50000 us" in str(timed_payload["error"])


def test_grpc_timeout_answers_deadline_exceeded(deadline_server: ServerThread) -> None:
    client = grpcclient.InferenceServerClient(deadline_server.grpc_address)
    data = np.asarray([DATA], dtype=np.float32)
    item = grpcclient.InferInput("input", list(data.shape), "FP32")
    item.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as raised:
        client.infer(MODEL, [item], timeout=1000)
    assert raised.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert "timeout of 1000 us" in str(raised.value.message())
    result = client.infer(MODEL, [item])
    np.testing.assert_array_equal(result.as_numpy("output"), data)
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [item], priority=5)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "priority" in str(refused.value.message())


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"priority": 5}, "priority levels"),
        ({"sequence_id": 7, "sequence_start": True}, "sequence batcher"),
        ({"timeout": -1}, "non-negative integer"),
        ({"timeout": "soon"}, "non-negative integer"),
    ],
)
async def test_unsupported_or_malformed_parameters_answer_400(
    deadline_server: ServerThread, parameters: dict[str, object], named: str
) -> None:
    async with aiohttp.ClientSession() as session:
        status, payload = await _post(session, deadline_server, _body(parameters))
    assert status == 400, payload
    assert named in str(payload["error"])


async def test_default_scheduling_parameters_are_accepted(deadline_server: ServerThread) -> None:
    defaults = {"priority": 0, "sequence_id": 0, "sequence_start": False, "sequence_end": False}
    async with aiohttp.ClientSession() as session:
        status, payload = await _post(session, deadline_server, _body({**defaults, "timeout": 0}))
    assert status == 200, payload
