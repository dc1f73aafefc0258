"""Bad input gets the right 4xx and a message naming the problem; the server lives on."""

from __future__ import annotations

import io
import json

import aiohttp
import numpy as np
import pytest

from tests.conftest import TEST_MAX_REQUEST_BYTES
from tests.helpers import ServerThread

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
        ("unknown-model", "/v2/models/nope/infer", _infer_body(), {}, 404, "unknown model 'nope'"),
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
        ("predictions-unknown", "/predictions/nope", b"[1]", {}, 404, "unknown model 'nope'"),
        (
            "predictions-shape",
            "/predictions/tiny-mlp",
            b"[1, 2, 3]",
            {},
            400,
            "does not match model shape",
        ),
    ]


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
