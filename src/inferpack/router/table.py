"""Where each model lives, and which of its replicas takes the next request.

The routing table maps a model name to the backends (servers) that host it; it is built
from the fleet's specs and never changes: a fleet that re-plans (``deploy --follow``) builds
a new table and swaps it into the picker in one step (:meth:`Picker.set_table`), between
two requests of the single event loop, so every request sees one table or the other. The
picker spreads requests over a model's
replicas by least outstanding requests:

    candidates = replicas of the model not marked down (all of them if every one is)
    fewest = min(outstanding[b] for b in candidates)
    pick the first such replica after the model's last pick (round robin); outstanding += 1
    ... forward ...; outstanding -= 1

Least outstanding adapts to replicas of unequal speed without measuring latency (a slow
server keeps more requests and so gets fewer new ones); round robin among ties keeps an
idle fleet evenly used. Counts are per backend, not per model, because a server's models
share its CPUs. A backend that refused a connection is skipped for ``DOWN_FOR_S`` so a
replicated model keeps working while one replica is gone.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from inferpack.errors import NotFoundError, UnavailableError

T = TypeVar("T")

# After a refused connection a backend is skipped this long (when a replica is left): long
# enough to spare clients a burst of failed attempts, short enough that a restarted server
# is used again soon.
DOWN_FOR_S = 2.0


@dataclass(frozen=True)
class Backend:
    """One server behind the router: its name (for messages) and its two addresses."""

    name: str
    http_url: str  # http://host:port
    grpc_address: str  # host:port


class RoutingTable:
    """Model name → the backends hosting it (in plan order), and optionally each replica's
    planned share of the model's rate (``weights[model][i]`` for ``replicas(model)[i]``)."""

    def __init__(
        self,
        placements: Mapping[str, Sequence[Backend]],
        weights: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        self._placements = {model: tuple(hosts) for model, hosts in placements.items() if hosts}
        self.backends = tuple(
            dict.fromkeys(b for hosts in self._placements.values() for b in hosts)
        )
        self._weights: dict[str, tuple[float, ...]] = {}
        for model, shares in (weights or {}).items():
            hosts = self._placements.get(model, ())
            if len(shares) != len(hosts) or any(not w > 0 for w in shares):
                raise ValueError(f"{model}: one positive weight per replica, got {shares}")
            if len(set(shares)) > 1:  # equal weights route as unweighted
                self._weights[model] = tuple(float(w) for w in shares)

    @classmethod
    def from_hosts(
        cls,
        hosts: Iterable[tuple[Backend, Sequence[str]]],
        rates: Mapping[tuple[str, str], float] | None = None,
    ) -> RoutingTable:
        """From (backend, models it serves) pairs; a model on several backends is replicated.
        ``rates``: (model, backend name) → the replica's planned rate, its routing weight."""
        placements: dict[str, list[Backend]] = {}
        for backend, models in hosts:
            for model in dict.fromkeys(models):
                placements.setdefault(model, []).append(backend)
        weights = None
        if rates:
            weights = {
                model: [max(rates.get((model, b.name), 0.0), 1e-9) for b in backends]
                for model, backends in placements.items()
                if len(backends) > 1 and all((model, b.name) in rates for b in backends)
            }
        return cls(placements, weights)

    def weights(self, model: str) -> tuple[float, ...] | None:
        """The replicas' planned shares of ``model``, None when they are even (unweighted)."""
        return self._weights.get(model)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._placements)

    def hosted_by(self, backend: Backend) -> tuple[str, ...]:
        """The models ``backend`` serves, in table order."""
        return tuple(model for model, hosts in self._placements.items() if backend in hosts)

    def replicas(self, model: str) -> tuple[Backend, ...]:
        """The backends hosting ``model``; NotFoundError (the server's wording) otherwise."""
        hosts = self._placements.get(model)
        if hosts is None:
            raise NotFoundError(f"Request for unknown model: '{model}' is not found")
        return hosts


class Picker:
    """Least-outstanding choice among a model's replicas, with round robin among ties; for a
    model whose replicas have planned shares (RoutingTable weights), the replica furthest
    behind its share of the model's requests so far, least outstanding among ties.

    Single-threaded (one event loop) by design: no locks. ``clock`` is injectable so tests
    can mark backends down and let time pass without sleeping."""

    def __init__(self, table: RoutingTable, clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.outstanding = {backend: 0 for backend in table.backends}
        self._down_until: dict[Backend, float] = {}
        self._held: set[Backend] = set()
        self._turn: dict[str, int] = {}
        self._sent: dict[str, list[int]] = {}  # weighted models: requests sent per replica
        self._per_model: dict[tuple[Backend, str], int] = {}  # requests in flight
        self._clock = clock

    def set_table(self, table: RoutingTable) -> None:
        """Route by ``table`` from the next request on. Requests in flight keep their
        backends (counted until released, even on a backend the new table dropped); a
        model whose replicas or weights changed starts its weighted shares afresh."""
        old = self.table
        for backend in table.backends:
            self.outstanding.setdefault(backend, 0)
        for model in list(self._sent):
            if (
                model not in table.models
                or table.replicas(model) != old.replicas(model)
                or table.weights(model) != old.weights(model)
            ):
                del self._sent[model]
        self.table = table

    def in_flight(self, backend: Backend, model: str | None = None) -> int:
        """Requests forwarded to ``backend`` and not yet answered (of ``model`` only, if
        given): what a replica being removed must drain to 0."""
        if model is None:
            return self.outstanding.get(backend, 0)
        return self._per_model.get((backend, model), 0)

    def acquire(self, model: str, exclude: Iterable[Backend] = ()) -> Backend:
        """The backend for the next request of ``model``, counted as outstanding.

        ``exclude``: replicas already tried for this request (skipped while others remain)."""
        replicas = self.table.replicas(model)
        tried = set(exclude)
        candidates = [b for b in replicas if b not in tried] or list(replicas)
        now = self._clock()
        up = [b for b in candidates if not self._is_down(b, now)]
        candidates = up or candidates
        weights = self.table.weights(model)
        if weights is not None:
            return self._weighted(model, replicas, weights, candidates)
        fewest = min(self.outstanding[b] for b in candidates)
        start = self._turn.get(model, 0) % len(replicas)
        for offset in range(len(replicas)):  # the next tied replica after the last pick
            backend = replicas[(start + offset) % len(replicas)]
            if backend in candidates and self.outstanding[backend] == fewest:
                break
        self._turn[model] = start + offset + 1
        self._count(backend, model)
        return backend

    def _count(self, backend: Backend, model: str) -> None:
        self.outstanding[backend] += 1
        key = (backend, model)
        self._per_model[key] = self._per_model.get(key, 0) + 1

    def _weighted(
        self,
        model: str,
        replicas: Sequence[Backend],
        weights: Sequence[float],
        candidates: Sequence[Backend],
    ) -> Backend:
        """The candidate with the least (requests sent + 1) / weight; fewest outstanding,
        then plan order, among ties."""
        sent = self._sent.setdefault(model, [0] * len(replicas))
        allowed = set(candidates)
        index = min(
            (i for i, b in enumerate(replicas) if b in allowed),
            key=lambda i: ((sent[i] + 1) / weights[i], self.outstanding[replicas[i]], i),
        )
        sent[index] += 1
        backend = replicas[index]
        self._count(backend, model)
        return backend

    def release(self, backend: Backend, model: str | None = None) -> None:
        """One request of ``backend`` answered (``model``: the one acquire() was given)."""
        if self.outstanding.get(backend, 0) <= 0:
            raise AssertionError(f"release of {backend.name} with no request outstanding")
        self.outstanding[backend] -= 1
        if model is not None:
            key = (backend, model)
            left = self._per_model.get(key, 0) - 1
            if left > 0:
                self._per_model[key] = left
            else:
                self._per_model.pop(key, None)

    @contextmanager
    def lease(self, model: str, exclude: Iterable[Backend] = ()) -> Iterator[Backend]:
        """acquire() for the duration of a ``with`` block; released however it ends."""
        backend = self.acquire(model, exclude)
        try:
            yield backend
        finally:
            self.release(backend, model)

    def mark_down(self, backend: Backend) -> None:
        """``backend`` refused a connection: prefer its peers for ``DOWN_FOR_S``."""
        self._down_until[backend] = self._clock() + DOWN_FOR_S

    def mark_up(self, backend: Backend) -> None:
        self._down_until.pop(backend, None)

    def hold(self, backend: Backend) -> None:
        """``backend`` is not ready (its server restarts): no request goes to it while a
        peer can take it, until :meth:`unhold`. Neither a refused connection (which marks
        down for seconds) nor an answer from it (which marks up) ends a hold."""
        self._held.add(backend)

    def is_held(self, backend: Backend) -> bool:
        return backend in self._held

    def unhold(self, backend: Backend) -> None:
        """``backend`` is ready again. Its models' weighted shares start afresh: counted
        from the hold on, it would be so far behind its share that it took all of their
        requests until it caught up."""
        self._held.discard(backend)
        self.mark_up(backend)
        for model in self.table.hosted_by(backend):
            self._sent.pop(model, None)

    def is_down(self, backend: Backend) -> bool:
        return self._is_down(backend, self._clock())

    def _is_down(self, backend: Backend, now: float) -> bool:
        return backend in self._held or self._down_until.get(backend, 0.0) > now


class BackendUnreachableError(UnavailableError):
    """No connection to a backend (refused, reset, closed): 503 / UNAVAILABLE naming it.

    ``refused``: the connection was never made, so the request did not reach the backend
    and another replica may take it."""

    def __init__(self, backend: Backend, address: str, reason: str, refused: bool) -> None:
        super().__init__(f"backend {backend.name} at {address} is unreachable: {reason}")
        self.backend = backend
        self.refused = refused


async def with_failover(
    picker: Picker,
    model: str,
    call: Callable[[Backend], Awaitable[T]],
    *,
    retry_broken: bool = False,
) -> T:
    """``call`` on a replica of ``model``; on a refused connection, on the next replica.

    A refused connection always moves on: the request never arrived. A connection broken
    after the request left (the server died mid-request) moves on only with
    ``retry_broken``: the request may have run, and runs again elsewhere (inference has
    no side effects, so the router passes it on rather than lose it). Every other
    outcome, failures included, is the answer."""
    tried: list[Backend] = []
    while True:
        with picker.lease(model, tried) as backend:
            try:
                result = await call(backend)
            except BackendUnreachableError as error:
                picker.mark_down(backend)
                tried.append(backend)
                again = error.refused or retry_broken
                if not again or len(tried) >= len(picker.table.replicas(model)):
                    raise
                continue
        picker.mark_up(backend)
        return result
