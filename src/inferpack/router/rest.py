"""The router's KServe v2 REST face: per-model requests go to a replica, bytes unchanged.

A model request is forwarded as it came (method, path, query, body, the headers that
carry meaning) and the backend's answer, whatever its status, goes back unchanged: tensors
are never decoded here, so the router costs a copy of the bytes and a hop, not a codec.
Server-level routes are answered from the whole fleet: live by the router itself, ready
only when every backend is ready, statistics and the repository index merged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from inferpack.errors import InferpackError, PermissionDeniedError, UnavailableError, http_status
from inferpack.router.table import Backend, BackendUnreachableError, Picker, with_failover

log = logging.getLogger(__name__)
PICKER = web.AppKey("picker", Picker)
SESSION = web.AppKey("session", aiohttp.ClientSession)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Request headers a backend reads; the rest (Host, Connection, ...) belong to this hop.
FORWARDED_REQUEST_HEADERS = (
    "Content-Type",
    "Content-Encoding",
    "Inference-Header-Content-Length",
    "Accept-Encoding",
    "Authorization",
)
# Response headers of the hop itself, set again by aiohttp for the client's connection.
HOP_RESPONSE_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
)
# A health probe or a merged listing waits this long for each backend.
PROBE_TIMEOUT_S = 5.0


def _json(payload: Any, status: int = 200) -> web.Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Router failures leave as ``{"error": ...}`` with the error tree's status, as the
    server's do."""
    try:
        return await handler(request)
    except InferpackError as error:
        return _json({"error": str(error)}, status=http_status(error))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _json({"error": error.reason}, status=error.status)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _json({"error": "internal server error"}, status=500)


async def _send(
    request: web.Request, backend: Backend, body: bytes, path_qs: str | None = None
) -> web.Response:
    """One request to one backend; its answer as a response to our client."""
    headers = {k: request.headers[k] for k in FORWARDED_REQUEST_HEADERS if k in request.headers}
    # The raw (still percent-encoded) path: the decoded one would turn a model named
    # "a%2Fb" into the path /v2/models/a/b/..., which the backend does not have.
    url = URL(backend.http_url + (path_qs or request.rel_url.raw_path_qs), encoded=True)
    try:
        async with request.app[SESSION].request(
            request.method, url, data=body or None, headers=headers
        ) as upstream:
            payload = await upstream.read()
            kept = {
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_RESPONSE_HEADERS
            }
            return web.Response(body=payload, status=upstream.status, headers=kept)
    except aiohttp.ClientConnectorError as error:
        raise BackendUnreachableError(backend, backend.http_url, str(error), refused=True) from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
        reason = str(error) or type(error).__name__
        raise BackendUnreachableError(backend, backend.http_url, reason, refused=False) from None


async def forward_model(request: web.Request) -> web.Response:
    """Any per-model route: to the least busy replica of the model named in the path."""
    model = request.match_info["model"]
    picker = request.app[PICKER]
    picker.table.replicas(model)  # an unknown model is refused before its body is read
    body = await request.read()
    return await with_failover(picker, model, lambda backend: _send(request, backend, body))


async def live(request: web.Request) -> web.Response:
    return _json({"live": True})


async def _probe(request: web.Request, backend: Backend, path: str, method: str = "GET") -> Any:
    """A backend's JSON answer to ``path`` (None when it does not answer with 200)."""
    session = request.app[SESSION]
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    try:
        async with session.request(method, backend.http_url + path, timeout=timeout) as answer:
            return await answer.json() if answer.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def _probe_all(request: web.Request, path: str, method: str = "GET") -> list[Any]:
    backends = request.app[PICKER].table.backends
    return await asyncio.gather(*(_probe(request, b, path, method) for b in backends))


async def ready(request: web.Request) -> web.Response:
    """Ready only when every backend is: a model's only host being down is not ready."""
    answers = await _probe_all(request, "/v2/health/ready")
    is_ready = all(answer is not None for answer in answers)
    return _json({"ready": is_ready}, status=200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    """The first backend that answers speaks for the fleet (they run the same version)."""
    for backend in request.app[PICKER].table.backends:
        answer = await _probe(request, backend, "/v2")
        if answer is not None:
            return _json(answer)
    raise UnavailableError("no backend answered /v2")


async def all_statistics(request: web.Request) -> web.Response:
    """Every backend's statistics, concatenated: a replicated model appears once per replica."""
    rows = [
        row
        for answer in await _probe_all(request, "/v2/models/stats")
        if answer
        for row in answer.get("model_stats", [])
    ]
    return _json({"model_stats": rows})


async def repository_index(request: web.Request) -> web.Response:
    """The backends' indexes merged: one row per model, READY where any replica is."""
    await request.read()
    merged: dict[str, dict[str, Any]] = {}
    for answer in await _probe_all(request, "/v2/repository/index", method="POST"):
        for row in answer or []:
            kept = merged.get(row["name"])
            if kept is None or (row.get("state") == "READY" and kept.get("state") != "READY"):
                merged[row["name"]] = row
    return _json(sorted(merged.values(), key=lambda row: str(row["name"])))


async def refuse_control(request: web.Request) -> web.Response:
    raise PermissionDeniedError(
        "the router does not load or unload models: the plan places them on servers"
    )


def add_routes(app: web.Application) -> None:
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/models/stats", all_statistics)  # before /v2/models/{model}
    for prefix in (model, versioned):
        app.router.add_get(prefix, forward_model)
        for leaf in ("stats", "ready", "config"):
            app.router.add_get(f"{prefix}/{leaf}", forward_model)
        app.router.add_post(f"{prefix}/infer", forward_model)
    app.router.add_post("/predictions/{model}", forward_model)
    app.router.add_post("/predictions/{model}/{version}", forward_model)
    app.router.add_post("/v2/repository/index", repository_index)
    app.router.add_post("/v2/repository/models/{model}/load", refuse_control)
    app.router.add_post("/v2/repository/models/{model}/unload", refuse_control)
