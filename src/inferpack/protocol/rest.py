"""KServe v2 REST (with the binary tensor extension) and TorchServe-style routes on aiohttp.

Handlers decode the wire format, call the Engine, encode the result; errors raised
anywhere become ``{"error": ...}`` with the status the error tree gives (:mod:`inferpack.errors`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from inferpack.errors import (
    InferpackError,
    InvalidInputError,
    OverloadedError,
    PayloadTooLargeError,
    UnauthenticatedError,
    http_status,
)
from inferpack.protocol.access import RepositoryAccess
from inferpack.protocol.body import read_counted_body
from inferpack.protocol.model_info import model_metadata, triton_model_config, triton_statistics_for
from inferpack.protocol.torchserve import decode_prediction, encode_prediction
from inferpack.protocol.uploads import is_upload, read_upload, render_answer, upload_request
from inferpack.protocol.v2_codec import (
    HEADER_LENGTH,
    OutputEncoding,
    decode_infer_request,
    encode_infer_response,
    raw_input_shape,
)
from inferpack.runtime import Engine
from inferpack.runtime.inflight import InflightBytes, Reservation
from inferpack.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from inferpack.types import InferRequest, InferResponse

log = logging.getLogger(__name__)
ENGINE = web.AppKey("engine", Engine)
MAX_REQUEST_BYTES = web.AppKey("max_request_bytes", int)
INFLIGHT_BYTES = web.AppKey("inflight_bytes", InflightBytes)
# Bodies (and responses) from 1 MiB up (~5 ms of decoding) are decoded (encoded) on a worker
# thread; smaller ones inline, where the hand-off would cost more than the loop waits. The
# decoder holds the GIL, so a thread only lets the loop in at switch intervals: 8 concurrent
# 4 MB decodes stalled the loop 130 ms inline, 70-105 ms on threads
# (benchmarks/results/json_decode.json).
OFFLOAD_BYTES = 1024 * 1024
REPOSITORY_ACCESS = web.AppKey("repository_access", RepositoryAccess)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: BaseException) -> web.Response:
    status = http_status(error)
    headers = {}
    if isinstance(error, OverloadedError):
        headers["Retry-After"] = str(math.ceil(error.retry_after_s))
    if isinstance(error, UnauthenticatedError):
        headers["WWW-Authenticate"] = "Bearer"
    message = str(error) if isinstance(error, InferpackError) else "internal server error"
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a JSON error with the mapped status; the server lives on."""
    try:
        return await handler(request)
    except InferpackError as error:
        return error_response(error)
    except web.HTTPRequestEntityTooLarge as error:
        return error_response(PayloadTooLargeError(f"request body is too large: {error.text}"))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return web.json_response({"error": error.reason}, status=error.status)
    except Exception as error:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(error)


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


async def _read_body(request: web.Request) -> bytes:
    limit = request.app[MAX_REQUEST_BYTES]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(
            f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes"
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes") from None


def _header_length(request: web.Request) -> int | None:
    """The JSON header's length, or None (all JSON). ASCII digits only: ``"²".isdigit()``
    holds, and int() of thousands of digits raises, so both are checked first."""
    raw = request.headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise InvalidInputError(f"{HEADER_LENGTH} must be a non-negative integer, got {raw[:40]!r}")
    return int(text)


async def live(request: web.Request) -> web.Response:
    return _json({"live": _engine(request).live()})


async def ready(request: web.Request) -> web.Response:
    is_ready = _engine(request).ready()
    return _json({"ready": is_ready}, status=200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    return _json(_engine(request).server_metadata())


def _model_args(request: web.Request) -> tuple[str, str | None]:
    return request.match_info["model"], request.match_info.get("version")


async def model_metadata_handler(request: web.Request) -> web.Response:
    """From the repository's config: answers whether or not the model is loaded."""
    name, version = _model_args(request)
    engine = _engine(request)
    config = await engine.model_config(name, version)
    return _json(model_metadata(config, await engine.model_versions(name)))


async def model_config_handler(request: web.Request) -> web.Response:
    name, version = _model_args(request)
    return _json(triton_model_config(await _engine(request).model_config(name, version)))


async def model_statistics(request: web.Request) -> web.Response:
    name = request.match_info.get("model")
    version = request.match_info.get("version")
    return _json(triton_statistics_for(_engine(request), name, version))


async def model_ready(request: web.Request) -> web.Response:
    name, version = _model_args(request)
    is_ready = _engine(request).model_ready(name, version)
    return _json({"name": name, "ready": is_ready}, status=200 if is_ready else 503)


async def _raw_binary_request(request: web.Request, body: bytes) -> tuple[bytes, int]:
    """Raw mode (header length 0): the body is the data of a single-input model's input
    (shape from the config, so the model need not be loaded yet)."""
    name, version = _model_args(request)
    config = await _engine(request).model_config(name, version)
    if len(config.inputs) != 1:
        raise InvalidInputError(
            f"raw binary requests need a model with one input; {name!r} has "
            f"{[(s.name, list(s.dims)) for s in config.inputs]}"
        )
    spec = config.inputs[0]
    shape = raw_input_shape(spec.datatype, spec.dims, config.batching, body, spec.name)
    header = {
        "inputs": [
            {
                "name": spec.name,
                "datatype": spec.datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(body)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    header_bytes = json.dumps(header).encode()
    return header_bytes + body, len(header_bytes)


async def _decode(
    body: bytes, header_length: int | None, name: str, version: str | None
) -> tuple[InferRequest, OutputEncoding]:
    if len(body) < OFFLOAD_BYTES:
        return decode_infer_request(body, header_length, name, version)
    return await asyncio.to_thread(decode_infer_request, body, header_length, name, version)


async def _encode(response: InferResponse, encoding: OutputEncoding) -> tuple[bytes, int | None]:
    if sum(array.nbytes for array in response.outputs.values()) < OFFLOAD_BYTES:
        return encode_infer_response(response, encoding)
    return await asyncio.to_thread(encode_infer_response, response, encoding)


def _admit(request: web.Request, name: str) -> Reservation:
    """An unknown model is refused before the body is read; the body's bytes count in flight
    (:mod:`inferpack.runtime.inflight`) from before it is read until the answer is encoded."""
    _engine(request).entry(name)
    return request.app[INFLIGHT_BYTES].reserve(request.content_length or 0)


async def _read_admitted_body(request: web.Request, reservation: Reservation) -> bytes:
    """Counted as it arrives: a chunked body announced no length (:mod:`.body`)."""
    return await read_counted_body(request, request.app[MAX_REQUEST_BYTES], reservation)


async def infer(request: web.Request) -> web.Response:
    engine = _engine(request)
    name, version = _model_args(request)
    with engine.counting_failures(name):
        header_length = _header_length(request)
        reservation = _admit(request, name)
    with reservation:
        with engine.counting_failures(name):
            body = await _read_admitted_body(request, reservation)
            if header_length == 0:
                body, header_length = await _raw_binary_request(request, body)
            infer_request, encoding = await _decode(body, header_length, name, version)
            infer_request.charge = reservation.add  # decoded images count in flight too
        del body  # the tensors keep what they need (binary inputs are views of it)
        response = await engine.infer(infer_request)
        payload, json_length = await _encode(response, encoding)
    if json_length is None:
        return web.Response(body=payload, content_type="application/json")
    return web.Response(
        body=payload,
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(json_length)},
    )


async def predictions(request: web.Request) -> web.Response:
    """TorchServe-style: JSON tensors, or uploads (images, text) for models that declare a
    ``preprocess`` (:mod:`inferpack.protocol.uploads`)."""
    engine = _engine(request)
    name, version = _model_args(request)
    with engine.counting_failures(name):
        reservation = _admit(request, name)
    with reservation:
        with engine.counting_failures(name):
            config = await engine.model_config(name, version)  # engine.infer loads under lru
            upload = None
            if is_upload(request, config):
                limit = request.app[MAX_REQUEST_BYTES]
                upload = await read_upload(request, config, limit, reservation)
            if upload is None:
                body = await _read_admitted_body(request, reservation)
                infer_request, added_batch = decode_prediction(body, config, version)
                del body
            else:
                infer_request = upload_request(upload, config, version)
            infer_request.charge = reservation.add  # decoded images count in flight too
        response = await engine.infer(infer_request)
        if upload is None:
            payload = encode_prediction(response, added_batch)
        else:
            labels = engine.labels(name, response.model_version)
            payload = render_answer(response, config, upload.single, labels)
    return web.Response(body=payload, content_type="application/json")


async def _optional_json(request: web.Request) -> dict[str, Any]:
    body = await _read_body(request)
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"malformed JSON in request body: {error}") from None
    if not isinstance(payload, dict):
        raise InvalidInputError("request body must be a JSON object")
    return payload


def _check_repository_access(request: web.Request) -> None:
    """The repository API's access policy (:mod:`inferpack.protocol.access`), before the body."""
    request.app[REPOSITORY_ACCESS].check(request.headers.get("Authorization"))


async def repository_index(request: web.Request) -> web.Response:
    _check_repository_access(request)
    payload = await _optional_json(request)
    return _json(await _engine(request).index(ready_only=bool(payload.get("ready", False))))


async def repository_load(request: web.Request) -> web.Response:
    _check_repository_access(request)
    await _optional_json(request)  # parameters (config overrides) are not supported yet
    await _engine(request).load_model(request.match_info["model"])
    return _json({})


async def repository_unload(request: web.Request) -> web.Response:
    _check_repository_access(request)
    await _optional_json(request)
    await _engine(request).unload_model(request.match_info["model"])
    return _json({})


async def metrics(request: web.Request) -> web.Response:
    """Rendered on a thread: thousands of models take long enough to stall inference."""
    body = await asyncio.to_thread(_engine(request).metrics.render)
    response = web.Response(body=body)
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response


def add_routes(app: web.Application) -> None:
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/models/stats", model_statistics)  # before /v2/models/{model}
    for prefix in (model, versioned):
        app.router.add_get(f"{prefix}/stats", model_statistics)
        app.router.add_get(prefix, model_metadata_handler)
        app.router.add_get(f"{prefix}/ready", model_ready)
        app.router.add_get(f"{prefix}/config", model_config_handler)
        app.router.add_post(f"{prefix}/infer", infer)
    app.router.add_post("/predictions/{model}", predictions)
    app.router.add_post("/predictions/{model}/{version}", predictions)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v2/repository/index", repository_index)
    app.router.add_post("/v2/repository/models/{model}/load", repository_load)
    app.router.add_post("/v2/repository/models/{model}/unload", repository_unload)


__all__ = [
    "ENGINE",
    "INFLIGHT_BYTES",
    "MAX_REQUEST_BYTES",
    "REPOSITORY_ACCESS",
    "add_routes",
    "error_middleware",
]
