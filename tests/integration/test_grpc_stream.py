"""tritonclient.grpc's streaming API and Triton's ModelConfig / ModelStatistics RPCs."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import ServerThread, reference_outputs

Answer = tuple[grpcclient.InferResult | None, InferenceServerException | None]
_WAIT_S = 30


@pytest.fixture
def client(server: ServerThread) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


@pytest.fixture
def answers(client: grpcclient.InferenceServerClient) -> Iterator[queue.Queue[Answer]]:
    """Start a stream whose callback queues every (result, error) pair it receives."""
    received: queue.Queue[Answer] = queue.Queue()
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    yield received
    client.stop_stream()


def _input(data: np.ndarray, name: str = "input") -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(data.shape), "FP32")
    item.set_data_from_numpy(data)
    return item


def _stats(client: grpcclient.InferenceServerClient, model: str) -> Any:
    """The ModelStatistics message of version 1 (messages, not JSON: JSON drops zeros)."""
    stats = client.get_inference_statistics(model, "1").model_stats
    assert len(stats) == 1
    return stats[0]


def test_stream_answers_every_request_with_its_id(
    client: grpcclient.InferenceServerClient, answers: queue.Queue[Answer], model_repo: Path
) -> None:
    rng = np.random.default_rng(5)
    sent = {f"req-{i}": rng.standard_normal((i % 3 + 1, 16)).astype(np.float32) for i in range(8)}
    for request_id, data in sent.items():
        client.async_stream_infer("tiny-mlp", [_input(data)], request_id=request_id)
    got = {}
    for _ in sent:
        result, error = answers.get(timeout=_WAIT_S)
        assert error is None and result is not None
        response = result.get_response()
        assert response.model_name == "tiny-mlp" and response.model_version == "1"
        got[response.id] = result.as_numpy("output")
    assert got.keys() == sent.keys()
    for request_id, data in sent.items():
        expected = reference_outputs(model_repo, "tiny-mlp", data)[0]
        np.testing.assert_allclose(got[request_id], expected, rtol=1e-5, atol=1e-6)


def test_a_failed_request_does_not_end_the_stream(
    client: grpcclient.InferenceServerClient, answers: queue.Queue[Answer]
) -> None:
    client.async_stream_infer("tiny-mlp", [_input(np.zeros((1, 15), np.float32))], request_id="b")
    result, error = answers.get(timeout=_WAIT_S)
    assert result is None and error is not None
    assert "does not match model shape" in error.message()

    client.async_stream_infer("nope", [_input(np.zeros((1, 16), np.float32))], request_id="u")
    result, error = answers.get(timeout=_WAIT_S)
    assert result is None and error is not None
    assert error.message() == "Request for unknown model: 'nope' is not found"

    data = np.ones((2, 16), np.float32)
    client.async_stream_infer("tiny-mlp", [_input(data)], request_id="good")
    result, error = answers.get(timeout=_WAIT_S)
    assert error is None and result is not None
    assert result.get_response().id == "good"
    unary = client.infer("tiny-mlp", [_input(data)]).as_numpy("output")
    np.testing.assert_allclose(result.as_numpy("output"), unary, rtol=1e-6)


def test_stream_requests_run_concurrently_and_batch(
    client: grpcclient.InferenceServerClient, answers: queue.Queue[Answer]
) -> None:
    """tiny-mlp-b16 waits 20 ms for a batch to fill: requests served one after the other
    would each run alone; requests running together share executions."""
    before = _stats(client, "tiny-mlp-b16")
    count = 8
    for i in range(count):
        client.async_stream_infer(
            "tiny-mlp-b16", [_input(np.full((1, 16), i, np.float32))], request_id=str(i)
        )
    ids = set()
    for _ in range(count):
        result, error = answers.get(timeout=_WAIT_S)
        assert error is None and result is not None
        ids.add(result.get_response().id)
    assert ids == {str(i) for i in range(count)}
    after = _stats(client, "tiny-mlp-b16")
    assert after.inference_count - before.inference_count == count
    assert after.execution_count - before.execution_count < count


def test_model_config_matches_the_rest_extension(
    client: grpcclient.InferenceServerClient, server: ServerThread
) -> None:
    config = client.get_model_config("tiny-mlp-b16", as_json=True)["config"]
    over_rest = httpclient.InferenceServerClient(server.address).get_model_config("tiny-mlp-b16")
    assert config["name"] == over_rest["name"] == "tiny-mlp-b16"
    assert config["max_batch_size"] == over_rest["max_batch_size"] == 16
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": ["16"]}]
    assert config["output"] == [{"name": "output", "data_type": "TYPE_FP32", "dims": ["4"]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "20000"
    assert config["instance_group"][0]["count"] == over_rest["instance_group"][0]["count"]
    assert config["platform"] == over_rest["platform"]
    message = client.get_model_config("identity").config
    assert [i.data_type for i in message.input][:2] == [1, 2]  # TYPE_BOOL, TYPE_UINT8
    assert list(message.input[0].dims) == [-1]


def test_model_statistics_counts_requests_consistently(
    client: grpcclient.InferenceServerClient,
) -> None:
    before = _stats(client, "small-cnn")
    for _ in range(3):
        client.infer("small-cnn", [_input(np.zeros((2, 3, 64, 64), np.float32))])
    after = _stats(client, "small-cnn")
    assert after.name == "small-cnn" and after.version == "1"
    assert after.inference_count - before.inference_count == 6
    assert after.execution_count - before.execution_count == 3
    stats, old = after.inference_stats, before.inference_stats
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert getattr(stats, key).count - getattr(old, key).count == 3, key
    assert stats.compute_infer.ns > old.compute_infer.ns
    assert stats.success.ns >= stats.compute_infer.ns  # a request spans its compute
    by_size = {b.batch_size: b for b in after.batch_stats}
    assert by_size[2].compute_infer.count == by_size[2].compute_output.count > 0
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {"small-cnn", "tiny-mlp"} <= {s["name"] for s in everything}
    with pytest.raises(InferenceServerException) as raised:
        client.get_inference_statistics("small-cnn", "7")
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    assert "no loaded version '7'" in raised.value.message()
