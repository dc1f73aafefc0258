"""Bad input gets the right 4xx and a message naming the problem; the server lives on."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import aiohttp
import grpc
import numpy as np
import pytest

from inferpack.config import ServerConfig
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from inferpack.protocol.rest import INFLIGHT_BYTES
from inferpack.protocol.v2_codec import HEADER_LENGTH
from tests.conftest import TEST_MAX_REQUEST_BYTES
from tests.helpers import ServerThread, edit_model

TRITON_NESTING = "JSON nesting depth exceeds maximum allowed limit (100)"
GOOD_INPUT = {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}


def _infer_body(**changes: object) -> bytes:
    return json.dumps({"inputs": [{**GOOD_INPUT, **changes}]}).encode()


def _binary_body(declared_bytes: int, sent_bytes: int) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 16],
                    "parameters": {"binary_data_size": declared_bytes},
                }
            ]
        }
    ).encode()
    body = header + np.zeros(sent_bytes // 4, dtype=np.float32).tobytes()
    return body, {"Inference-Header-Content-Length": str(len(header))}


def _cases() -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    tiny = "/v2/models/tiny-mlp/infer"
    truncated, truncated_headers = _binary_body(64, 32)
    return [
        ("malformed-json", tiny, b'{"inputs": [', {}, 400, "malformed JSON"),
        ("not-an-object", tiny, b"[1, 2]", {}, 400, "must be a JSON object"),
        (
            "unknown-model",
            "/v2/models/nope/infer",
            _infer_body(),
            {},
            404,
            "unknown model: 'nope' is not found",
        ),
        (
            "unknown-version",
            "/v2/models/tiny-mlp/versions/9/infer",
            _infer_body(),
            {},
            404,
            "no version '9'",
        ),
        (
            "wrong-datatype",
            tiny,
            _infer_body(datatype="INT32", data=[0] * 16),
            {},
            400,
            "datatype INT32 does not match model datatype FP32",
        ),
        ("unknown-datatype", tiny, _infer_body(datatype="FP8"), {}, 400, "unknown datatype 'FP8'"),
        (
            "wrong-shape",
            tiny,
            _infer_body(shape=[2, 8]),
            {},
            400,
            "shape [2, 8] does not match model shape [-1, 16]",
        ),
        (
            "batch-too-large",
            tiny,
            _infer_body(shape=[65, 16], data=[0.0] * 65 * 16),
            {},
            400,
            "batch size 65 is outside 1..64",
        ),
        (
            "data-length",
            tiny,
            _infer_body(data=[0.0] * 15),
            {},
            400,
            "15 values do not match shape [1, 16]",
        ),
        ("string-data", tiny, _infer_body(data=["a"] * 16), {}, 400, "string values"),
        (
            "missing-input",
            tiny,
            json.dumps({"inputs": [{**GOOD_INPUT, "name": "other"}]}).encode(),
            {},
            400,
            "missing input(s) ['input']",
        ),
        (
            "extra-input",
            tiny,
            json.dumps({"inputs": [GOOD_INPUT, {**GOOD_INPUT, "name": "x2"}]}).encode(),
            {},
            400,
            "has no input(s) ['x2']",
        ),
        ("no-inputs", tiny, b'{"inputs": []}', {}, 400, "'inputs' must be a non-empty list"),
        (
            "unknown-output",
            tiny,
            json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "z"}]}).encode(),
            {},
            400,
            "has no output 'z'",
        ),
        (
            "truncated-binary",
            tiny,
            truncated,
            truncated_headers,
            400,
            "binary_data_size 64 exceeds the 32 bytes",
        ),
        (
            "header-longer-than-body",
            tiny,
            _infer_body(),
            {"Inference-Header-Content-Length": "99999"},
            400,
            "larger than the body",
        ),
        (
            "unclaimed-binary",
            tiny,
            _infer_body() + b"\x00" * 8,
            {"Inference-Header-Content-Length": str(len(_infer_body()))},
            400,
            "8 bytes of binary data are not claimed",
        ),
        (
            "bad-header-length",
            tiny,
            _infer_body(),
            {"Inference-Header-Content-Length": "x"},
            400,
            "must be a non-negative integer",
        ),
        ("too-large", tiny, b" " * (TEST_MAX_REQUEST_BYTES + 1), {}, 413, "exceeds the limit"),
        (
            "predictions-unknown",
            "/predictions/nope",
            b"[1]",
            {},
            404,
            "unknown model: 'nope' is not found",
        ),
        (
            "predictions-shape",
            "/predictions/tiny-mlp",
            b"[1, 2, 3]",
            {},
            400,
            "does not match model shape",
        ),
        *_hostile_cases(tiny),
    ]


def _hostile_cases(tiny: str) -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    """Bodies that once crashed a decoder (500 and a traceback) or were read needlessly."""
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        (
            "header-length-superscript",
            tiny,
            _infer_body(),
            {"Inference-Header-Content-Length": "\u00b2"},
            400,
            "must be a non-negative integer",
        ),
        (
            "header-length-5000-digits",
            tiny,
            _infer_body(),
            {"Inference-Header-Content-Length": "9" * 5000},
            400,
            "must be a non-negative integer",
        ),
        ("deep-json", tiny, b'{"x": ' + deep + b"}", {}, 400, TRITON_NESTING),
        (
            "deep-data",
            tiny,
            _infer_body(data=None).replace(b"null", deep),
            {},
            400,
            TRITON_NESTING,
        ),
        ("deep-torchserve", "/predictions/tiny-mlp", deep, {}, 400, TRITON_NESTING),
        ("rank-40", tiny, _infer_body(shape=[1] * 40), {}, 400, "more than the 32 supported"),
        ("huge-zero-size", tiny, _infer_body(shape=[0, 2**62], data=[]), {}, 400, "more than"),
        (
            "unknown-model-not-decoded",
            "/v2/models/nope/infer",
            b'{"inputs": [',
            {},
            404,
            "unknown model: 'nope' is not found",
        ),
        (
            "output-twice",
            tiny,
            json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "output"}] * 2}).encode(),
            {},
            400,
            "output 'output' already exists in request",
        ),
        (
            "nan-in-int",
            tiny,
            _infer_body(datatype="INT32", data=None).replace(b"null", b"[NaN]"),
            {},
            400,
            "floating-point values",
        ),
        (
            "bytes-prefix-past-buffer",
            tiny,
            *_binary_bytes_overrun(),
            400,
            "overruns the tensor data",
        ),
    ]


def _binary_bytes_overrun() -> tuple[bytes, dict[str, str]]:
    item = {
        "name": "input",
        "datatype": "BYTES",
        "shape": [1],
        "parameters": {"binary_data_size": 6},
    }
    header = json.dumps({"inputs": [item]}).encode()
    body = header + (1 << 20).to_bytes(4, "little") + b"ab"
    return body, {"Inference-Header-Content-Length": str(len(header))}


CASES = _cases()


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_bad_request_gets_clear_error(
    server: ServerThread,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    async with aiohttp.ClientSession() as session:
        data = io.BytesIO(body) if len(body) > 64 * 1024 else body
        async with session.post(f"{server.url}{path}", data=data, headers=headers) as response:
            assert response.status == status, await response.text()
            payload = await response.json()
        assert message in payload["error"]
        async with session.get(f"{server.url}/v2/health/live") as live:
            assert live.status == 200


async def test_unknown_route_and_method_are_json_errors(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/v3/nothing") as response:
            assert response.status == 404
            assert "error" in await response.json()
        async with session.get(f"{server.url}/v2/models/tiny-mlp/infer") as response:
            assert response.status == 405
        async with session.get(f"{server.url}/v2/models/nope/ready") as response:
            assert response.status == 404


async def test_nasty_bodies_leave_the_server_serving(server: ServerThread) -> None:
    url = f"{server.url}/v2/models/tiny-mlp/infer"
    async with aiohttp.ClientSession() as session:
        for _, path, body, headers, status, _ in CASES:
            data = io.BytesIO(body) if len(body) > 64 * 1024 else body
            async with session.post(f"{server.url}{path}", data=data, headers=headers) as reply:
                assert reply.status == status
        async with session.post(url, data=_infer_body()) as response:
            assert response.status == 200, await response.text()
            assert len((await response.json())["outputs"][0]["data"]) == 4


async def test_listed_outputs_decide_their_own_encoding(server: ServerThread) -> None:
    body = {
        "inputs": [GOOD_INPUT],
        "outputs": [{"name": "output"}],
        "parameters": {"binary_data_output": True},
    }
    async with aiohttp.ClientSession() as session:
        url = f"{server.url}/v2/models/tiny-mlp/infer"
        async with session.post(url, data=json.dumps(body).encode()) as response:
            assert response.status == 200
            assert HEADER_LENGTH not in response.headers  # binary_data defaults to false
            assert len((await response.json())["outputs"][0]["data"]) == 4


async def test_raw_binary_mode_takes_a_variable_dim_from_the_byte_count(
    server: ServerThread,
) -> None:
    data = np.arange(5, dtype=np.float32)
    headers = {HEADER_LENGTH: "0", "Content-Type": "application/octet-stream"}
    async with aiohttp.ClientSession() as session:
        url = f"{server.url}/v2/models/sleep/infer"
        async with session.post(url, data=data.tobytes(), headers=headers) as response:
            assert response.status == 200, await response.text()
            length = int(response.headers[HEADER_LENGTH])
            body = await response.read()
    header = json.loads(body[:length])
    assert header["outputs"][0]["shape"] == [1, 5]
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32), data)


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with one slow model and room for ~one small request in flight."""
    from inferpack.repository.init import init_repository

    repo = tmp_path_factory.mktemp("tight")
    init_repository(repo, ["sleep"], seed=0)
    # 2 s: the three refusals below (a new connection, a first gRPC call) land while it holds,
    # with room for a slow, busy host
    edit_model(repo, "sleep", "hold", workload_options={"sleep_ms": 2000}, max_batch_size=1)
    config = ServerConfig(str(repo), http_port=0, grpc_port=0, max_inflight_bytes=TIGHT_BYTES)
    thread = ServerThread(config).start()
    yield thread
    thread.stop()


TIGHT_BYTES = 600  # one request of the body below (~130 bytes) fits, a second does not


def _hold_body() -> bytes:
    item = {"name": "input", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}
    return json.dumps({"inputs": [item]}).encode().ljust(TIGHT_BYTES // 2 + 1)


async def _until_in_flight(server: ServerThread) -> None:
    assert server.server is not None
    budget = server.server.runner.app[INFLIGHT_BYTES]
    async with asyncio.timeout(30):
        while budget.in_flight_bytes == 0:
            await asyncio.sleep(0.005)


async def test_bytes_in_flight_past_the_cap_are_refused_on_every_route(
    tight_server: ServerThread,
) -> None:
    url = f"{tight_server.url}/v2/models/hold/infer"
    message = pb.ModelInferRequest(model_name="hold")
    message.inputs.add(name="input", datatype="FP32", shape=[1, TIGHT_BYTES // 8])
    message.raw_input_contents.append(b"\x00" * (TIGHT_BYTES // 2))
    async with (
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(tight_server.grpc_address) as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await asyncio.wait_for(channel.channel_ready(), 30)
        first = asyncio.create_task(session.post(url, data=_hold_body()))
        await _until_in_flight(tight_server)
        async with session.post(url, data=_hold_body()) as refused:
            assert refused.status == 429, await refused.text()
            assert refused.headers["Retry-After"] == "1"
            assert "bytes of requests in flight" in (await refused.json())["error"]
        predictions = f"{tight_server.url}/predictions/hold"
        async with session.post(predictions, data=b"[1.0]".ljust(TIGHT_BYTES // 2)) as refused:
            assert refused.status == 429, await refused.text()
        with pytest.raises(grpc.aio.AioRpcError) as over_grpc:
            await stub.ModelInfer(message)
        assert over_grpc.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        async with await first as response:
            assert response.status == 200, await response.text()
        async with session.post(url, data=_hold_body()) as again:
            assert again.status == 200  # the budget was given back
        assert (await stub.ModelInfer(message)).outputs[0].shape == [1, TIGHT_BYTES // 8]


async def test_grpc_unknown_model_is_not_found_before_decoding(server: ServerThread) -> None:
    message = pb.ModelInferRequest(model_name="nope")
    message.inputs.add(name="x", datatype="FP8", shape=[-1])
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message)
    assert error.value.code() is grpc.StatusCode.NOT_FOUND
