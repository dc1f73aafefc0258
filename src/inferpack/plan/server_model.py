"""A profile's ``server`` block: what one server does with a batch, for latency models.

Capacity and a latency-vs-rate curve say what one server sustained for N even copies; they
cannot say what 40 models at skewed rates do, since batching is per model. The server block
states the mechanism instead, so ``inferpack simulate`` (and the planner's latency model)
can replay any mix of rates on it::

    server:
      workers: 2                 # batches that run at once on the server (worker threads)
      frontend_ms: 0.25          # event-loop CPU per request (decode, encode, hand-offs)
      overhead_ms: 1.1           # added to every request, queues nothing (HTTP, hops, client)
      max_batch_size: 8          # the model's dynamic batching
      max_queue_delay_us: 2000
      preferred_batch_sizes: []
      instances: 1               # batches of one model that run at once
      batch_service_ms: {1: 3.1, 2: 4.0, 4: 6.2, 8: 10.5}   # one batch on one worker
      service_cv: 0.5            # spread of a batch's time around the curve (fitted)
      service_cv_by_rate: {200: 1.0, 400: 1.25, 600: 1.5}   # the spread per server req/s

``service_cv_by_rate`` (optional) states the spread as a function of the server's request
rate, fitted level by level and never falling as the rate rises: the host's CPU is shared
by the event loop, the load generator and a router, so a batch's time varies more the
busier the host is. Between its rates the spread is interpolated, outside them it is the
nearest end's; without it, ``service_cv`` holds at every rate.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Any


@dataclass(frozen=True)
class ServerModel:
    workers: int
    frontend_ms: float
    max_batch_size: int
    max_queue_delay_us: float
    instances: int
    batch_service_ms: tuple[tuple[int, float], ...]  # (batch size, ms), by size
    preferred_batch_sizes: tuple[int, ...] = ()
    overhead_ms: float = 0.0  # constant per request outside the server's queues
    service_cv: float = 0.0  # coefficient of variation of a batch's service time
    # (server req/s, CV) by rate: the spread as the load grows (module docstring)
    service_cv_by_rate: tuple[tuple[float, float], ...] = ()

    def slowed(self, factor: float) -> ServerModel:
        """This server on a host that computes ``factor`` times slower than the profile's
        (its batch curve and frontend times ``factor``; the spread and the clients' overhead
        kept): what a plan's tolerated slowdown and ``simulate --slowdown`` replay."""
        if factor == 1.0:
            return self
        curve = tuple((size, ms * factor) for size, ms in self.batch_service_ms)
        return dataclasses.replace(
            self, batch_service_ms=curve, frontend_ms=self.frontend_ms * factor
        )

    def cv_at(self, rate_rps: float) -> float:
        """The service spread of this server when it is sent ``rate_rps`` in all."""
        table = self.service_cv_by_rate
        if not table:
            return self.service_cv
        if rate_rps <= table[0][0]:
            return table[0][1]
        for (low_rps, low_cv), (high_rps, high_cv) in itertools.pairwise(table):
            if rate_rps <= high_rps:
                return low_cv + (high_cv - low_cv) * (rate_rps - low_rps) / (high_rps - low_rps)
        return table[-1][1]


def shared_server(blocks: Iterable[ServerModel]) -> ServerModel:
    """The server part (workers, frontend) of a server holding models of several kinds:
    the most conservative of their blocks (fewest workers, then the slowest frontend)."""
    return min(blocks, key=lambda b: (b.workers, -b.frontend_ms))


def _number(value: Any, kinds: type | UnionType = int | float) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def _int(raw: Mapping[str, Any], key: str, where: str, problems: list[str], default: int) -> int:
    value = raw.get(key, default)
    if not (_number(value, int) and value >= 1):
        problems.append(f"{where}: server.{key} must be an integer >= 1 (got {value!r})")
        return default
    return int(value)


def _ms(raw: Mapping[str, Any], key: str, where: str, problems: list[str]) -> float:
    value = raw.get(key, 0)
    if not (_number(value) and value >= 0):
        problems.append(f"{where}: server.{key} must be a number >= 0 (got {value!r})")
        return 0.0
    return float(value)


def _entries(
    raw: Any,
    field: str,
    where: str,
    problems: list[str],
    *,
    what: str,
    needs: str,
    valid: Callable[[Any, Any], bool],
) -> list[tuple[Any, Any]]:
    """The (key, value) entries of the mapping ``server.<field>`` that are ``valid``; each
    other entry, and a value that is no non-empty mapping, named in ``problems``."""
    if not isinstance(raw, Mapping) or not raw:
        problems.append(f"{where}: server.{field} must map {what}")
        return []
    entries = []
    for key, value in raw.items():
        if valid(key, value):
            entries.append((key, value))
        else:
            problems.append(f"{where}: server.{field} needs {needs} (got {key!r}: {value!r})")
    return entries


def _curve(raw: Any, where: str, problems: list[str]) -> tuple[tuple[int, float], ...]:
    entries = _entries(
        raw, "batch_service_ms", where, problems,
        what="batch sizes to ms", needs="sizes >= 1 and ms > 0",
        valid=lambda size, ms: _number(size, int) and size >= 1 and _number(ms) and ms > 0,
    )  # fmt: skip
    return tuple(sorted((size, float(ms)) for size, ms in entries))


def _cv_table(raw: Any, where: str, problems: list[str]) -> tuple[tuple[float, float], ...]:
    if raw is None:
        return ()
    entries = _entries(
        raw, "service_cv_by_rate", where, problems,
        what="req/s to a spread", needs="req/s > 0 and spreads >= 0",
        valid=lambda rate, cv: _number(rate) and rate > 0 and _number(cv) and cv >= 0,
    )  # fmt: skip
    return tuple(sorted((float(rate), float(cv)) for rate, cv in entries))


def parse_server_model(raw: Any, where: str, problems: list[str]) -> ServerModel | None:
    """The ``server`` block of a profile entry (None when absent); problems appended."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: server must be a mapping")
        return None
    preferred = raw.get("preferred_batch_sizes") or []
    if not isinstance(preferred, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in preferred
    ):
        problems.append(f"{where}: server.preferred_batch_sizes must be integers >= 1")
        preferred = []
    return ServerModel(
        workers=_int(raw, "workers", where, problems, 1),
        frontend_ms=_ms(raw, "frontend_ms", where, problems),
        max_batch_size=_int(raw, "max_batch_size", where, problems, 1),
        max_queue_delay_us=_ms(raw, "max_queue_delay_us", where, problems),
        instances=_int(raw, "instances", where, problems, 1),
        batch_service_ms=_curve(raw.get("batch_service_ms"), where, problems),
        preferred_batch_sizes=tuple(sorted(preferred)),
        overhead_ms=_ms(raw, "overhead_ms", where, problems),
        service_cv=_ms(raw, "service_cv", where, problems),
        service_cv_by_rate=_cv_table(raw.get("service_cv_by_rate"), where, problems),
    )


def server_model_to_dict(model: ServerModel) -> dict[str, Any]:
    return {
        "workers": model.workers,
        "frontend_ms": model.frontend_ms,
        "overhead_ms": model.overhead_ms,
        "max_batch_size": model.max_batch_size,
        "max_queue_delay_us": model.max_queue_delay_us,
        "preferred_batch_sizes": list(model.preferred_batch_sizes),
        "instances": model.instances,
        "batch_service_ms": dict(model.batch_service_ms),
        "service_cv": model.service_cv,
        **(
            {"service_cv_by_rate": dict(model.service_cv_by_rate)}
            if model.service_cv_by_rate
            else {}
        ),
    }
