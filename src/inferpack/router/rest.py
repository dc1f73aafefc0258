"""The router's KServe v2 REST face: per-model requests go to a replica, bytes unchanged.

A model request is forwarded as it came (method, path, query, body, the headers that
carry meaning) and the backend's answer, whatever its status, goes back unchanged: tensors
are never decoded here, so the router costs a copy of the bytes and a hop, not a codec.
Server-level routes are answered from the whole fleet: live by the router itself, ready
only when every backend is ready, statistics and the repository index merged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from inferpack.errors import PermissionDeniedError, UnavailableError
from inferpack.protocol.http_responses import json_response, read_body
from inferpack.protocol.v2_routes import V2Handlers, add_v2_routes
from inferpack.router.demand import DemandMeter, demand_csv, prometheus_text
from inferpack.router.table import Backend, BackendUnreachableError, Picker, with_failover

PICKER = web.AppKey("picker", Picker)
METER = web.AppKey("meter", DemandMeter)
PLANNED = web.AppKey("planned", dict[str, float])
# What a controller beside the router (deploy --follow) is doing; empty without one.
CONTROLLER = web.AppKey("controller", dict[str, Any])
SESSION = web.AppKey("session", aiohttp.ClientSession)
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
# A health probe or a merged listing (REST or gRPC) waits this long for each backend: one
# hung server must not hang the fleet's answer.
PROBE_TIMEOUT_S = 5.0
PROBE_TIMEOUT = web.AppKey("probe_timeout_s", float)


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
    body = await read_body(request)  # over the limit: refused as a server refuses it
    started, failed = time.perf_counter(), True
    try:
        answer = await with_failover(
            picker, model, lambda backend: _send(request, backend, body), retry_broken=True
        )
        failed = answer.status >= 500
        return answer
    finally:
        if _is_inference(request.path):  # metadata, config and ready calls are not demand
            request.app[METER].record(model, time.perf_counter() - started, failed)


def _is_inference(path: str) -> bool:
    return path.endswith("/infer") or path.startswith("/predictions/")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: the observed per-model demand (router/demand.py)."""
    meter = request.app[METER]
    text = prometheus_text(meter.snapshot(), meter.window_s)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def fleet(request: web.Request) -> web.Response:
    """The fleet as the router sees it: each server's state and requests in flight, each
    model's planned and observed rate (60 s window) and where it is served; with
    deploy --follow, the controller's current plan and the step it is applying."""
    picker, planned = request.app[PICKER], request.app[PLANNED]
    observed = {row.model: row for row in request.app[METER].snapshot()}

    def state(backend: Backend) -> str:
        return "held" if picker.is_held(backend) else "down" if picker.is_down(backend) else "up"

    servers = [
        {"name": b.name, "http_url": b.http_url, "state": state(b),
         "in_flight": picker.outstanding[b]}
        for b in picker.table.backends
    ]  # fmt: skip
    models = []
    for model in picker.table.models:
        seen = observed.get(model)
        models.append(
            {
                "model": model,
                "planned_rps": planned.get(model),
                "observed_rps": None if seen is None else seen.rps,
                "observed_p90_ms": None if seen is None else seen.p90_ms,
                "servers": [b.name for b in picker.table.replicas(model)],
                "weights": picker.table.weights(model),
            }
        )
    controller = request.app[CONTROLLER]
    return json_response(
        {"servers": servers, "models": models, "controller": dict(controller) or None}
    )


async def demand(request: web.Request) -> web.Response:
    """The observed demand as the planner's CSV (``plan --demand``)."""
    return web.Response(text=demand_csv(request.app[METER].snapshot()), content_type="text/csv")


async def live(request: web.Request) -> web.Response:
    return json_response({"live": True})


async def _probe(request: web.Request, backend: Backend, path: str, method: str = "GET") -> Any:
    """A backend's JSON answer to ``path`` (None when it does not answer with 200)."""
    session = request.app[SESSION]
    timeout = aiohttp.ClientTimeout(total=request.app[PROBE_TIMEOUT])
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
    return json_response({"ready": is_ready}, status=200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    """The first backend that answers speaks for the fleet (they run the same version)."""
    for backend in request.app[PICKER].table.backends:
        answer = await _probe(request, backend, "/v2")
        if answer is not None:
            return json_response(answer)
    raise UnavailableError("no backend answered /v2")


async def all_statistics(request: web.Request) -> web.Response:
    """Every backend's statistics, concatenated: a replicated model appears once per replica."""
    rows = [
        row
        for answer in await _probe_all(request, "/v2/models/stats")
        if answer
        for row in answer.get("model_stats", [])
    ]
    return json_response({"model_stats": rows})


async def repository_index(request: web.Request) -> web.Response:
    """The backends' indexes merged: one row per model, READY where any replica is."""
    await request.read()
    merged: dict[str, dict[str, Any]] = {}
    for answer in await _probe_all(request, "/v2/repository/index", method="POST"):
        for row in answer or []:
            kept = merged.get(row["name"])
            if kept is None or (row.get("state") == "READY" and kept.get("state") != "READY"):
                merged[row["name"]] = row
    return json_response(sorted(merged.values(), key=lambda row: str(row["name"])))


async def refuse_control(request: web.Request) -> web.Response:
    raise PermissionDeniedError(
        "the router does not load or unload models: the plan places them on servers"
    )


def add_routes(app: web.Application) -> None:
    """The server's routes (:mod:`inferpack.protocol.v2_routes`): per-model ones forwarded,
    server-level ones answered for the fleet, the repository's control refused."""
    handlers = V2Handlers(
        live=live,
        ready=ready,
        server_metadata=server_metadata,
        all_statistics=all_statistics,
        model_metadata=forward_model,
        model_statistics=forward_model,
        model_ready=forward_model,
        model_config=forward_model,
        infer=forward_model,
        predictions=forward_model,
        repository_index=repository_index,
        repository_load=refuse_control,
        repository_unload=refuse_control,
    )
    add_v2_routes(app, handlers)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/fleet/demand.csv", demand)
    app.router.add_get("/fleet", fleet)
