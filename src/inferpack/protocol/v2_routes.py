"""The KServe v2 REST routes (and TorchServe-style /predictions) as one table that both REST
faces fill in: the server with its handlers, the router with its forwarder for every
per-model route. A route added here is served by both, so the router never lags the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from inferpack.protocol.http_responses import Handler

MODEL = "/v2/models/{model}"
VERSIONED = "/v2/models/{model}/versions/{version}"


@dataclass(frozen=True)
class V2Handlers:
    """One handler per route; the per-model ones see ``model`` (and ``version``) in
    ``request.match_info``."""

    live: Handler
    ready: Handler
    server_metadata: Handler
    all_statistics: Handler
    model_metadata: Handler
    model_statistics: Handler
    model_ready: Handler
    model_config: Handler
    infer: Handler
    predictions: Handler
    repository_index: Handler
    repository_load: Handler
    repository_unload: Handler


def add_v2_routes(app: web.Application, handlers: V2Handlers) -> None:
    app.router.add_get("/v2/health/live", handlers.live)
    app.router.add_get("/v2/health/ready", handlers.ready)
    app.router.add_get("/v2", handlers.server_metadata)
    app.router.add_get("/v2/models/stats", handlers.all_statistics)  # before MODEL
    for prefix in (MODEL, VERSIONED):
        app.router.add_get(prefix, handlers.model_metadata)
        app.router.add_get(f"{prefix}/stats", handlers.model_statistics)
        app.router.add_get(f"{prefix}/ready", handlers.model_ready)
        app.router.add_get(f"{prefix}/config", handlers.model_config)
        app.router.add_post(f"{prefix}/infer", handlers.infer)
    app.router.add_post("/predictions/{model}", handlers.predictions)
    app.router.add_post("/predictions/{model}/{version}", handlers.predictions)
    app.router.add_post("/v2/repository/index", handlers.repository_index)
    app.router.add_post("/v2/repository/models/{model}/load", handlers.repository_load)
    app.router.add_post("/v2/repository/models/{model}/unload", handlers.repository_unload)
