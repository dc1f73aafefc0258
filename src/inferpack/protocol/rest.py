"""KServe v2 REST (with the binary tensor extension) and TorchServe-style routes on aiohttp.

Handlers decode the wire format, call the Engine, encode the result; errors raised
anywhere become ``{"error": ...}`` with the status the error tree gives (:mod:`inferpack.errors`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from inferpack.errors import (
    InvalidInputError,
)
from inferpack.protocol.access import RepositoryAccess
from inferpack.protocol.body import read_counted_body
from inferpack.protocol.http_responses import MAX_REQUEST_BYTES, json_response, read_body
from inferpack.protocol.model_info import model_metadata, triton_model_config, triton_statistics_for
from inferpack.protocol.offload import off_loop, output_bytes
from inferpack.protocol.tensors_json import NESTING_MESSAGE
from inferpack.protocol.torchserve import decode_prediction, encode_prediction
from inferpack.protocol.uploads import is_upload, read_upload, render_answer, upload_request
from inferpack.protocol.v2_codec import (
    HEADER_LENGTH,
    OutputEncoding,
    decode_infer_request,
    encode_infer_response,
    raw_input_shape,
)
from inferpack.protocol.v2_routes import V2Handlers, add_v2_routes
from inferpack.runtime import Engine
from inferpack.runtime.inflight import InflightBytes, Reservation
from inferpack.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from inferpack.types import InferRequest, InferResponse

log = logging.getLogger(__name__)
T = TypeVar("T")
ENGINE = web.AppKey("engine", Engine)
INFLIGHT_BYTES = web.AppKey("inflight_bytes", InflightBytes)
REPOSITORY_ACCESS = web.AppKey("repository_access", RepositoryAccess)


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


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
    return json_response({"live": _engine(request).live()})


async def ready(request: web.Request) -> web.Response:
    is_ready = _engine(request).ready()
    return json_response({"ready": is_ready}, status=200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    return json_response(_engine(request).server_metadata())


def _model_args(request: web.Request) -> tuple[str, str | None]:
    return request.match_info["model"], request.match_info.get("version")


async def model_metadata_handler(request: web.Request) -> web.Response:
    """From the repository's config: answers whether or not the model is loaded."""
    name, version = _model_args(request)
    engine = _engine(request)
    config = await engine.model_config(name, version)
    return json_response(model_metadata(config, await engine.model_versions(name)))


async def model_config_handler(request: web.Request) -> web.Response:
    name, version = _model_args(request)
    return json_response(triton_model_config(await _engine(request).model_config(name, version)))


async def model_statistics(request: web.Request) -> web.Response:
    name = request.match_info.get("model")
    version = request.match_info.get("version")
    return json_response(triton_statistics_for(_engine(request), name, version))


async def model_ready(request: web.Request) -> web.Response:
    name, version = _model_args(request)
    is_ready = _engine(request).model_ready(name, version)
    return json_response({"name": name, "ready": is_ready}, status=200 if is_ready else 503)


async def _raw_binary_request(request: web.Request, body: bytes) -> tuple[bytes, int]:
    """Raw mode (header length 0): the body is the data of a single-input model's input
    (shape from the config, so the model need not be loaded yet)."""
    name, version = _model_args(request)
    config = await _engine(request).model_config(name, version)
    if len(config.inputs) != 1:  # Triton's words, then the inputs
        raise InvalidInputError(
            f"Raw request must only have 1 input (found 1) to be deduced but got "
            f"{len(config.inputs)} inputs in {name!r} model configuration: "
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
    return await off_loop(len(body), decode_infer_request, body, header_length, name, version)


async def _encode(response: InferResponse, encoding: OutputEncoding) -> tuple[bytes, int | None]:
    size = output_bytes(response, encoding.is_binary)
    return await off_loop(size, encode_infer_response, response, encoding)


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
                infer_request, added_batch = await off_loop(
                    len(body), decode_prediction, body, config, version
                )
                del body
            else:
                infer_request = upload_request(upload, config, version)
            infer_request.charge = reservation.add  # decoded images count in flight too
        response = await engine.infer(infer_request)
        if upload is None:
            size = output_bytes(response, lambda _: False)
            payload = await off_loop(size, encode_prediction, response, added_batch)
        else:
            labels = engine.labels(name, response.model_version)
            payload = render_answer(response, config, upload.single, labels)
    return web.Response(body=payload, content_type="application/json")


class _IndexRequest(msgspec.Struct):
    """``POST /v2/repository/index``'s body: typed, so a wrong ``ready`` is refused before
    anything under it is read (however deep it nests)."""

    ready: bool = False


def _request_json(body: bytes, kind: type[T]) -> T:
    """The JSON object ``body`` holds, as ``kind`` (an empty body is its defaults). Every
    malformed body is InvalidInputError (400), however deep it nests."""
    if not body.strip():
        body = b"{}"
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        where = str(error).partition(" - at `$.")[2].rstrip("`")
        if not where:
            raise InvalidInputError("request body must be a JSON object") from None
        expected = str(error).partition("Expected `")[2].partition("`")[0]
        expected = {"bool": "a boolean"}.get(expected, expected)
        raise InvalidInputError(f"Invalid value for {where!r}: expected {expected}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"malformed JSON in request body: {error}") from None
    except RecursionError:
        raise InvalidInputError(f"request body: {NESTING_MESSAGE}") from None


async def _optional_json(request: web.Request) -> dict[str, Any]:
    return _request_json(await read_body(request), dict[str, Any])


def _check_repository_access(request: web.Request) -> None:
    """The repository API's access policy (:mod:`inferpack.protocol.access`), before the body."""
    request.app[REPOSITORY_ACCESS].check(request.headers.get("Authorization"))


async def repository_index(request: web.Request) -> web.Response:
    _check_repository_access(request)
    payload = _request_json(await read_body(request), _IndexRequest)
    return json_response(await _engine(request).index(ready_only=payload.ready))


async def repository_load(request: web.Request) -> web.Response:
    _check_repository_access(request)
    await _optional_json(request)  # parameters (config overrides) are not supported yet
    await _engine(request).load_model(request.match_info["model"])
    return json_response({})


async def repository_unload(request: web.Request) -> web.Response:
    _check_repository_access(request)
    await _optional_json(request)
    await _engine(request).unload_model(request.match_info["model"])
    return json_response({})


async def metrics(request: web.Request) -> web.Response:
    """Rendered on a thread: thousands of models take long enough to stall inference."""
    body = await asyncio.to_thread(_engine(request).metrics.render)
    response = web.Response(body=body)
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response


def add_routes(app: web.Application) -> None:
    handlers = V2Handlers(
        live=live,
        ready=ready,
        server_metadata=server_metadata,
        all_statistics=model_statistics,
        model_metadata=model_metadata_handler,
        model_statistics=model_statistics,
        model_ready=model_ready,
        model_config=model_config_handler,
        infer=infer,
        predictions=predictions,
        repository_index=repository_index,
        repository_load=repository_load,
        repository_unload=repository_unload,
    )
    add_v2_routes(app, handlers)
    app.router.add_get("/metrics", metrics)


__all__ = [
    "ENGINE",
    "INFLIGHT_BYTES",
    "MAX_REQUEST_BYTES",
    "REPOSITORY_ACCESS",
    "add_routes",
]
