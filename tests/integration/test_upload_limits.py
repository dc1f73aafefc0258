"""Uploads against the server's limits, through the real server and real clients: only the
allowed image formats reach Pillow, decoded pixels count in ``--max-inflight-bytes`` before
they are allocated, and a chunked body (no Content-Length) counts as it arrives."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress

import aiohttp
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from inferpack.config import ServerConfig
from inferpack.protocol.rest import INFLIGHT_BYTES
from tests.helpers import ServerThread

MIB = 1024 * 1024
CAP_BYTES = 4 * MIB  # --max-inflight-bytes
HELD_BYTES = 3 * MIB  # what the request holding the budget has sent (or announced)
# A PNG of a few KB whose pixels take 2000 x 2000 x 11 bytes (44 MB) to decode.
SIDE = 2000
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from inferpack.repository.init import init_repository

    root = tmp_path_factory.mktemp("upload-limits")
    init_repository(root, ["small-cnn"], seed=3)
    config = ServerConfig(
        str(root),
        http_port=0,
        grpc_port=0,
        max_request_bytes=CAP_BYTES,
        max_inflight_bytes=CAP_BYTES,
    )
    thread = ServerThread(config).start()
    yield thread
    thread.stop()


def _in_flight(server: ServerThread) -> int:
    assert server.server is not None
    return server.server.runner.app[INFLIGHT_BYTES].in_flight_bytes


def _wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


# -- formats ------------------------------------------------------------------------------


def test_an_eps_upload_is_refused_naming_its_format(server: ServerThread) -> None:
    """EPS never reaches Pillow's EPS plugin (nor Ghostscript behind it): 400 naming it."""
    response = requests.post(
        f"{server.url}/predictions/small-cnn", files={"images": ("a.eps", EPS)}, timeout=60
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "image 0 is EPS, not an accepted image format (JPEG, PNG, WebP, BMP, GIF)" in error
    client = grpcclient.InferenceServerClient(server.grpc_address)
    images = grpcclient.InferInput("images", [1, 1], "BYTES")
    images.set_data_from_numpy(np.array([[EPS]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("small-cnn", [images])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "image 0 is EPS" in str(refused.value.message())
    assert _in_flight(server) == 0


# -- decoded pixels -----------------------------------------------------------------------


@contextmanager
def _announced_body_held(server: ServerThread) -> Iterator[socket.socket]:
    """A request that announced HELD_BYTES and sent a few: admitted, it holds them in
    flight while the server waits for the rest."""
    head = (
        "POST /v2/models/small-cnn/infer HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {HELD_BYTES}\r\n\r\n"
    )
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as held:
        held.sendall(head.encode() + b'{"inputs": [')
        _wait_until(lambda: _in_flight(server) >= HELD_BYTES, "the held request is admitted")
        yield held
    _wait_until(lambda: _in_flight(server) == 0, "the held request is released")


def test_decoded_pixels_are_charged_to_the_in_flight_cap(server: ServerThread) -> None:
    """A few-KB PNG that decodes to 44 MB is refused (429, Retry-After) over every route
    while other requests hold the budget, and answered when it is alone; what it held is
    given back either way."""
    png = _png(SIDE)
    assert len(png) < 100_000
    url = f"{server.url}/predictions/small-cnn"
    with _announced_body_held(server):
        refused = requests.post(url, files={"images": png}, timeout=60)
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert "in flight" in refused.json()["error"]
        http = httpclient.InferenceServerClient(server.address)
        images = httpclient.InferInput("images", [1, 1], "BYTES")
        images.set_data_from_numpy(np.array([[png]], dtype=np.object_))
        with pytest.raises(InferenceServerException) as over_http:
            http.infer("small-cnn", [images])
        assert over_http.value.status() == "429"
        grpc = grpcclient.InferenceServerClient(server.grpc_address)
        grpc_images = grpcclient.InferInput("images", [1, 1], "BYTES")
        grpc_images.set_data_from_numpy(np.array([[png]], dtype=np.object_))
        with pytest.raises(InferenceServerException) as over_grpc:
            grpc.infer("small-cnn", [grpc_images])
        assert over_grpc.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    alone = requests.post(url, files={"images": png}, timeout=60)
    assert alone.status_code == 200, alone.text
    assert _in_flight(server) == 0


def test_small_images_still_fit_beside_each_other(server: ServerThread) -> None:
    """The charge is what decoding holds: images far under the cap are all answered."""
    url = f"{server.url}/predictions/small-cnn"
    files = [("images", _png(120)) for _ in range(4)]
    with _announced_body_held(server):
        answered = requests.post(url, files=files, timeout=60)
    assert answered.status_code == 200, answered.text
    assert len(answered.json()) == 4


# -- chunked bodies -----------------------------------------------------------------------


@asynccontextmanager
async def _chunked_body_held(
    session: aiohttp.ClientSession, url: str, first: bytes
) -> AsyncIterator[None]:
    """A chunked request (aiohttp sends an async generator without Content-Length) that
    has sent ``first`` and then waits; cancelled (its connection closed) on leaving."""
    never = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield first
        await never.wait()

    async def send() -> None:
        async with session.post(url, data=body(), headers={"Content-Type": "image/png"}):
            pass

    task = asyncio.create_task(send())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError, aiohttp.ClientError):
            await task


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("route", ["/v2/models/small-cnn/infer", "/predictions/small-cnn"])
async def test_a_chunked_body_counts_in_flight_as_it_arrives(
    server: ServerThread, route: str
) -> None:
    """Without a Content-Length nothing is reserved at admission: the bytes count as they
    are read, so a chunked body holds its share and a second is refused (429) once both
    would pass the cap; cancelled, the first gives its bytes back."""
    url = f"{server.url}{route}"
    async with aiohttp.ClientSession() as session:
        async with _chunked_body_held(session, url, b"\x89PNG" + b"\0" * (HELD_BYTES - 4)):
            await _until(lambda: _in_flight(server) >= HELD_BYTES, "the chunked body counts")
            second = b"\0" * (3 * MIB // 2)
            async with session.post(url, data=_chunks(second)) as response:
                assert response.status == 429, await response.text()
                assert "in flight" in (await response.json())["error"]
        await _until(lambda: _in_flight(server) == 0, "the cancelled body is released")
        async with session.post(url, data=_chunks(second)) as response:
            assert response.status == 400, await response.text()  # alone: read, then judged
    assert _in_flight(server) == 0


async def test_a_chunked_body_over_the_request_limit_is_413(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as session:
        body = _chunks(b"\0" * (CAP_BYTES + 1))
        async with session.post(f"{server.url}/predictions/small-cnn", data=body) as response:
            assert response.status == 413, await response.text()
    await _until(lambda: _in_flight(server) == 0, "the refused body is released")
