"""``inferpack profile``'s work: copies → server → rate search → one ``Profile``.

    copies = N distinct-weight copies of the model in a temporary repository (copies.py)
    server = that repository, explicit mode, the N copies loaded at start
    search = search_capacity(one open-loop loadtest level per rate, uniform over copies)
    memory = mean measured memory_bytes of the copies in the repository index, after the
             search (so it includes the workspace of the batches that ran)
    server = the batch service curve and frontend time from the server's statistics after
             each level, and its batching config (calibrate.py): the profile's server block,
             its service-time spread fitted to the measured p90s (fit.py)

The temporary repository and the server last exactly as long as the measurement.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferpack import __version__
from inferpack.bench.environment import describe
from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.errors import UnavailableError
from inferpack.loadtest.runner import run_loadtest
from inferpack.loadtest.spec import LoadSpec
from inferpack.plan.formats import Profile, RatePoint
from inferpack.plan.server_model import ServerModel
from inferpack.profile.calibrate import batch_service_ms, request_times_ms, server_model
from inferpack.profile.copies import make_copies
from inferpack.profile.fit import fit_service_cv, traffic_weights
from inferpack.profile.search import Report, SearchConfig, SearchResult, search_capacity
from inferpack.profile.serving import BackgroundFleet, BackgroundServer

# Each level runs exactly its 3 windows: the search compares rates, so every rate gets the
# same measurement, and an overloaded level never stabilises (more windows only add time).
LEVEL_WINDOWS = 3
# The least memory written (one byte, in MB): profiles.yaml requires model_memory_mb > 0.
MIN_MEMORY_MB = 1e-6
STATS = "/v2/models/stats"


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """Everything one profile measurement needs (read once by the CLI)."""

    model_repository: Path
    model: str
    instance_type: str
    search: SearchConfig
    kind: str | None = None  # default: the model's name
    models_per_server: int = 1
    transport: str = "http-binary"  # http-binary | grpc
    batch_size: int = 1
    # Measured seconds per level (was 6): 3.3x the requests behind each p90. With 20 s
    # levels the [11] validation's profiles agreed with the same server measured later at
    # 17 of 24 points, against 9 to 12 of 24 in four runs with 6 s ones (docs/plan.md,
    # "Level length").
    duration_s: float = 20.0
    warmup_s: float = 1.0
    workers: int = 1
    cpu_threads: int | None = None
    max_models: int | None = None
    seed: int = 0
    traffic: str = "uniform"  # uniform | zipf:S, over the copies
    # Measured through a local fleet's router (deploy --target local) instead of straight.
    through_router: bool = False
    catalog: Path | None = None  # deploy's price catalogue (the instance type's shape)
    region: str | None = None


@dataclass(frozen=True, slots=True)
class ProfileOutcome:
    profile: Profile
    search: SearchResult
    warnings: tuple[str, ...] = field(default=())


def run_profile(spec: ProfileSpec, report: Report | None = None) -> ProfileOutcome:
    """Measure ``spec``'s model on this machine; UnavailableError if no rate met the SLO."""
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="inferpack-profile-") as folder:
        root = Path(folder)
        names, distinct = make_copies(
            spec.model_repository, spec.model, spec.models_per_server, root
        )
        if not distinct:
            warnings.append(
                f"{spec.model}'s artifact is not safetensors: its {len(names)} copies hold "
                "the same weights, which the server shares, so latency is optimistic"
            )
        with _background(spec, root, names) as server:
            snapshots: list[tuple[float, Any]] = [(0.0, server.get_json(STATS))]
            measure = _measure(spec, server.url, names, warnings)

            def measure_and_snapshot(rate_rps: float) -> RatePoint:
                point = measure(rate_rps)
                snapshots.append((rate_rps, server.get_json(STATS)))
                return point

            result = search_capacity(measure_and_snapshot, spec.search, report)
            memory_mb = _memory_mb(server.index(), names)
            block = _server_block(server, names, snapshots, result.points)
    if block is not None:
        shares = traffic_weights(spec.traffic, len(names))
        block = fit_service_cv(block, result.points, shares)
    if memory_mb <= 0:
        warnings.append(
            f"the server measured 0 bytes for {spec.model} (no weights): written as "
            f"{MIN_MEMORY_MB:g} MB, since a profile's memory must be > 0"
        )
        memory_mb = MIN_MEMORY_MB
    if result.capacity_rps <= 0:
        lowest = result.points[0]
        raise UnavailableError(
            f"no rate met the SLO: the lowest, {lowest.rate_rps:g} req/s, had p90 "
            f"{lowest.p90_ms:.1f} ms and {lowest.error_pct:.2f} % errors (lower --start-rps)"
        )
    return ProfileOutcome(_profile(spec, result, memory_mb, block), result, tuple(warnings))


def _server_block(
    server: BackgroundServer,
    names: tuple[str, ...],
    snapshots: list[tuple[float, Any]],
    points: tuple[RatePoint, ...],
) -> ServerModel | None:
    """The profile's ``server`` block (calibrate.py): the batch curve over the whole search,
    the frontend time at the lowest rate measured."""
    lowest = min(range(1, len(snapshots)), key=lambda i: snapshots[i][0])
    rate = snapshots[lowest][0]
    nearest = min(points, key=lambda p: abs(p.rate_rps - rate), default=None)
    client_p50 = None if nearest is None else nearest.p50_ms
    before, after = snapshots[lowest - 1][1], snapshots[lowest][1]
    front_ms, over_ms = request_times_ms(before, after, names, client_p50)
    curve = batch_service_ms(snapshots[-1][1], names)
    config = server.get_json(f"/v2/models/{names[0]}/config")
    return server_model(config, curve, front_ms, server.cpu_workers, over_ms)


def _background(spec: ProfileSpec, root: Path, names: tuple[str, ...]) -> BackgroundServer:
    config = _server_config(spec, root, names)
    if not spec.through_router:
        return BackgroundServer(config)
    kind = spec.kind or spec.model
    return BackgroundFleet(config, kind, spec.instance_type, spec.catalog, spec.region)


def _server_config(spec: ProfileSpec, root: Path, names: tuple[str, ...]) -> ServerConfig:
    control = ControlConfig(
        mode=ControlMode.EXPLICIT, startup_models=names, cpu_threads=spec.cpu_threads
    )
    grpc_port = 0 if spec.transport == "grpc" else None
    return ServerConfig(str(root), http_port=0, grpc_port=grpc_port, control=control)


def _measure(
    spec: ProfileSpec, url: str, names: tuple[str, ...], warnings: list[str]
) -> Callable[[float], RatePoint]:
    def measure(rate_rps: float) -> RatePoint:
        load = LoadSpec(
            url=url,
            models=names,
            transport=spec.transport,
            mode="open",
            levels=(rate_rps,),
            distribution=spec.traffic,
            batch_size=spec.batch_size,
            duration_s=spec.duration_s,
            warmup_s=spec.warmup_s,
            max_windows=LEVEL_WINDOWS,
            workers=spec.workers,
            seed=spec.seed,
        )
        document = run_loadtest(load)
        warnings.extend(w for w in document["warnings"] if "not stable" not in w)
        [level] = document["levels"]
        return point_from_level(rate_rps, level)

    return measure


def point_from_level(rate_rps: float, level: dict[str, Any]) -> RatePoint:
    """A loadtest level as a profile point; p90 is infinite when nothing succeeded."""
    requests = level["requests"]
    failed = sum(level["errors"].values())
    latency = level["latency_ms"]
    return RatePoint(
        rate_rps=round(rate_rps, 3),
        achieved_rps=level["throughput_rps"],
        p50_ms=latency.get("p50", math.inf),
        p90_ms=latency.get("p90", math.inf),
        p99_ms=latency.get("p99", math.inf),
        error_pct=round(100 * failed / requests, 3) if requests else 100.0,
    )


def _memory_mb(index: list[dict[str, Any]], names: tuple[str, ...]) -> float:
    """Mean measured memory of the copies: own plus shared bytes, as if nothing were shared."""
    rows = [row for row in index if row["name"] in names and "memory_bytes" in row]
    if len(rows) != len(names):
        raise UnavailableError(f"the index lists {len(rows)} of the {len(names)} copies loaded")
    return sum(int(row["memory_bytes"]) for row in rows) / len(rows) / 2**20


def _profile(
    spec: ProfileSpec, result: SearchResult, memory_mb: float, block: ServerModel | None = None
) -> Profile:
    return Profile(
        kind=spec.kind or spec.model,
        instance_type=spec.instance_type,
        model_memory_mb=round(memory_mb, 6),
        capacity_rps=round(result.answered_capacity_rps, 3),
        slo_p90_ms=spec.search.slo_p90_ms,
        source=describe_source(spec),
        max_models=spec.max_models,
        points=result.points,
        models_per_server=spec.models_per_server,
        server=block,
    )


def describe_source(spec: ProfileSpec) -> str:
    """Where the numbers come from, in a line a person can check."""
    machine = describe("cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine["cores"]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    route = ", through the local fleet's router" if spec.through_router else ""
    return (
        f"measured by inferpack profile {__version__} on {machine['cpu']} ({cores} cores, "
        f"torch {machine['torch']}) {today}, {spec.models_per_server} copies of {spec.model}, "
        f"{spec.traffic} traffic, transport {spec.transport}{route}, batch {spec.batch_size}, "
        f"{spec.duration_s:g} s per level, {spec.workers} client process(es) on the same machine"
    )
