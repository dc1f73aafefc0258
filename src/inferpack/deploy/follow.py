"""``deploy --target local --follow``: the fleet follows its observed demand.

Every ``interval_s`` the controller observes, re-plans and applies, one step at a time:

    observe   each model's rate over the last interval, from the router's demand meter
              (models of the plan that got no request count at 0 req/s)
    smooth    each model's rate = max(this interval, the one before): demand that rises is
              followed at once, demand that falls only once two intervals agree, so one
              quiet interval does not close a server the next one needs (hysteresis)
    re-plan   plan --previous: the current plan for that demand x (1 + headroom), models kept
              where they are unless a server overflows or closing one pays (--max-moves)
    apply     without dropping a request, in this order:
              1 start the added servers (their models load at start) and wait until ready
              2 load each model gained by a kept server (POST .../load) and wait
              3 swap the router's table in one step (new requests go to the new places)
              4 for each replica given up: wait until the router has no request of that
                model in flight to that server, then unload it (POST .../unload)
              5 for each server removed: wait until it has nothing in flight, then stop it
                (SIGTERM: it drains whatever reached it after all)

A step that fails (a server that does not get ready, a load refused) is logged with the
reason and undone as far as it went (servers it started are stopped); the fleet keeps the
plan it had and the next interval tries again. Every action is one line on the output,
with the seconds since the fleet started, and each adopted plan is written to the log
folder (``plan-001.yaml``, ...) so ``plan --previous`` and ``simulate`` can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from inferpack.deploy.local import (
    Echo,
    LocalFleetConfig,
    Member,
    place_spec,
    start_member,
    stop_member,
    wait_ready,
)
from inferpack.deploy.spec import ServerSpec, Shapes, server_specs
from inferpack.errors import InferpackError
from inferpack.plan.formats import Demand, Plan, Profile, write_plan
from inferpack.plan.incremental import replan
from inferpack.plan.problem import PlanOptions, ServerType
from inferpack.router import Backend, RoutingTable, RunningRouter
from inferpack.runtime.workers import fleet_cpu_threads

DEFAULT_INTERVAL_S = 30.0
DEFAULT_HEADROOM = 0.2
# A replica or server being given up drains this long at most before it is unloaded or
# stopped anyway (a request stuck that long has a client that gave up).
DRAIN_TIMEOUT_S = 30.0
DRAIN_POLL_S = 0.05
# The model repository API's load and unload calls (a large model loads for minutes).
CONTROL_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class FollowConfig:
    """What re-planning needs beside the running fleet: the plan it starts from, the
    profiles and instance types to plan with, and the pace."""

    plan: Plan
    profiles: tuple[Profile, ...]
    types: tuple[ServerType, ...]
    options: PlanOptions
    shapes: Shapes  # instance type -> (accelerator, count, vcpu, memory GiB)
    model_repository: str
    interval_s: float = DEFAULT_INTERVAL_S
    headroom: float = DEFAULT_HEADROOM
    max_moves: int | None = None
    drain_timeout_s: float = DRAIN_TIMEOUT_S


@dataclass
class _State:
    plan: Plan
    step: int = 0
    previous_rates: dict[str, float] = field(default_factory=dict)
    servers_started: int = 0  # for port numbers with --base-port


def replan_time_limit_s(interval_s: float) -> float:
    """The planner's time each re-plan may take: a quarter of the interval, 1 to 10 s."""
    return max(1.0, min(10.0, interval_s / 4))


def smoothed(
    kinds: Mapping[str, str], observed: Mapping[str, float], previous: Mapping[str, float]
) -> tuple[list[Demand], dict[str, float]]:
    """The demand to plan for: every model of ``kinds`` at the larger of its rate now
    (``observed``, 0 if unseen) and ``previous`` (the last interval's); and this interval's
    rates, the next call's ``previous``. Rising demand is followed at once, falling demand
    once two intervals agree."""
    now = {model: observed.get(model, 0.0) for model in kinds}
    demand = [
        Demand(model, kind, max(now[model], previous.get(model, now[model])))
        for model, kind in sorted(kinds.items())
    ]
    return demand, now


class StepFailedError(InferpackError):
    """A re-plan that could not be applied; the fleet keeps its plan."""


class Controller:
    """Runs beside the local fleet (deploy/local.py), sharing its members list (the
    restart watcher reads the same list) and its router."""

    def __init__(
        self,
        follow: FollowConfig,
        members: list[Member],
        router: RunningRouter,
        *,
        fleet: LocalFleetConfig,
        log_dir: Path,
        echo: Echo,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.follow = follow
        self.members = members
        self.router = router
        self.fleet = fleet
        self.log_dir = log_dir
        self._echo = echo
        self._clock = clock
        self._started = clock()
        self.state = _State(follow.plan, servers_started=len(members))

    def log(self, line: str) -> None:
        self._echo(f"[{self._clock() - self._started:7.1f} s] {line}")

    def show(self, **state: object) -> None:
        """Publish the controller's state on the router's ``GET /fleet``."""
        self.router.controller.update(state)

    async def run(self) -> None:
        """Observe, re-plan and apply every interval until cancelled."""
        self.show(
            following=True,
            interval_s=self.follow.interval_s,
            headroom=self.follow.headroom,
            step=0,
            servers=len(self.state.plan.servers),
            usd_per_hour=self.state.plan.totals["usd_per_hour"],
            plan_file=None,
            applying=None,
            last_step=None,
        )
        self.log(
            f"following demand: every {self.follow.interval_s:g} s, headroom "
            f"{self.follow.headroom:.0%}, plans written to {self.log_dir}"
        )
        while True:
            await asyncio.sleep(self.follow.interval_s)
            try:
                await self.step()
            except (InferpackError, OSError) as error:  # OSError: writing the plan file
                self.log(f"step {self.state.step}: not applied ({error}); the fleet keeps its plan")
                self.show(applying=None, last_step={"step": self.state.step, "error": str(error)})

    def demand(self) -> list[Demand]:
        """Every model of the plan at its smoothed observed rate (module docstring)."""
        kinds = {m.name: m.kind for s in self.state.plan.servers for m in s.models}
        observed = {row.model: row.rps for row in self.router.meter.snapshot()}
        demand, self.state.previous_rates = smoothed(kinds, observed, self.state.previous_rates)
        return demand

    async def step(self) -> None:
        self.state.step += 1
        demand = self.demand()
        follow = self.follow
        new = await asyncio.to_thread(
            replan,
            self.state.plan,
            follow.profiles,
            demand,
            follow.types,
            follow.options,
            headroom=follow.headroom,
            max_moves=follow.max_moves,
        )
        assert new.changes is not None
        moves, added, removed = (
            new.changes["moves"],
            new.changes["servers_added"],
            new.changes["servers_removed"],
        )
        total = sum(d.rps for d in demand)
        head = (
            f"step {self.state.step}: observed {total:,.1f} req/s over {len(demand)} models; "
            f"plan: {len(new.servers)} servers, {new.totals['usd_per_hour']:.3f} USD/h"
        )
        summary = {
            "step": self.state.step,
            "observed_rps": round(total, 3),
            "moves": moves,
            "servers_added": added,
            "servers_removed": removed,
        }
        if not (moves or added or removed):
            self.log(f"{head}, no move")
            self._switch(new, self._specs(new))
            self.state.plan = new
            self.show(step=self.state.step, last_step=summary)
            return
        self.log(
            f"{head}; {len(moves)} model(s) move, {len(added)} server(s) added, "
            f"{len(removed)} removed"
        )
        self.show(step=self.state.step, applying=summary)
        await self.apply(new)
        self.state.plan = new
        path = self.log_dir / f"plan-{self.state.step:03d}.yaml"
        write_plan(path, new)
        self.log(f"step {self.state.step}: applied; the plan is {path}")
        self.show(
            applying=None,
            last_step=summary,
            servers=len(new.servers),
            usd_per_hour=new.totals["usd_per_hour"],
            plan_file=str(path),
        )

    def _specs(self, plan: Plan) -> dict[str, ServerSpec]:
        specs = server_specs(plan, self.follow.model_repository, self.follow.shapes)
        return {spec.name: spec for spec in specs}

    async def apply(self, new: Plan) -> None:
        specs = self._specs(new)
        by_name = {m.spec.name: m for m in self.members}
        added = [specs[name] for name in sorted(specs) if name not in by_name]
        kept = [m for m in self.members if m.spec.name in specs]
        gone = [m for m in self.members if m.spec.name not in specs]
        started = await self._start(added, len(specs))
        try:
            await self._load_gained(kept, specs)
        except BaseException:
            await self._stop(started, drain=False)
            raise
        self.members.extend(started)
        before = {m.spec.name: set(m.spec.models) for m in kept}
        self._switch(new, specs)
        await asyncio.gather(*(self._unload_lost(m, before[m.spec.name]) for m in kept))
        await self._stop(gone, drain=True)

    async def _start(self, specs: Sequence[ServerSpec], servers: int) -> list[Member]:
        """Start ``specs`` and wait until every one is ready; StepFailedError (after
        stopping them) if one is not."""
        if not specs:
            return []
        members = []
        for spec in specs:
            index = self.state.servers_started
            self.state.servers_started += 1
            threads = fleet_cpu_threads(servers)
            placed = place_spec(spec, index, self.fleet, threads)
            members.append(start_member(placed, self.log_dir))
            self.log(
                f"start server {spec.name} ({spec.instance_type}, {len(spec.models)} models: "
                f"{_names(spec.models)}), log {members[-1].child.log_path}"
            )
        began = self._clock()
        try:
            await wait_ready(members, self.fleet.ready_timeout_s)
        except InferpackError as error:
            await self._stop(members, drain=False)
            raise StepFailedError(str(error).splitlines()[0]) from None
        except BaseException:
            await self._stop(members, drain=False)
            raise
        for member in members:
            assert member.backend is not None
            self.log(
                f"server {member.spec.name} ready at {member.backend.http_url} "
                f"(pid {member.child.pid}) in {self._clock() - began:.1f} s"
            )
        return members

    async def _load_gained(self, kept: Sequence[Member], specs: dict[str, ServerSpec]) -> None:
        """Load on each kept server what it gains, all at once. The member's spec holds the
        gained models from the start (a server that dies meanwhile restarts with them);
        if a load fails, the ones that succeeded are unloaded again and the spec restored,
        then the first failure is raised."""
        pending: list[tuple[Member, str]] = []
        originals = {}
        for member in kept:
            gained = [m for m in specs[member.spec.name].models if m not in member.spec.models]
            if gained:
                originals[id(member)] = member.spec
                member.spec = dataclasses.replace(
                    member.spec, models=(*member.spec.models, *gained)
                )
                pending += [(member, model) for model in gained]
        outcomes = await asyncio.gather(
            *(self._control(member, model, "load") for member, model in pending),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if not failures:
            return
        for (member, model), outcome in zip(pending, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                with contextlib.suppress(StepFailedError):
                    await self._control(member, model, "unload")
        for member in kept:
            if id(member) in originals:
                member.spec = originals[id(member)]
        raise failures[0]

    async def _control(self, member: Member, model: str, action: str) -> None:
        """POST /v2/repository/models/<model>/<action> on ``member``; StepFailedError
        with the server's reason if it refuses."""
        assert member.backend is not None
        url = f"{member.backend.http_url}/v2/repository/models/{model}/{action}"
        began = self._clock()
        timeout = aiohttp.ClientTimeout(total=CONTROL_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(url) as answer,
            ):
                text = await answer.text()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise StepFailedError(
                f"{action} of {model} on {member.spec.name} failed: {error}"
            ) from None
        if status != 200:
            raise StepFailedError(
                f"{action} of {model} on {member.spec.name} refused ({status}): {text[:300]}"
            )
        verb = "loaded" if action == "load" else "unloaded"
        self.log(f"{verb} {model} on {member.spec.name} in {self._clock() - began:.2f} s")

    def _switch(self, new: Plan, specs: dict[str, ServerSpec]) -> None:
        """Give kept members their new models and rates, and route by the new plan."""
        for member in self.members:
            spec = specs.get(member.spec.name)
            if spec is not None:
                member.spec = dataclasses.replace(
                    member.spec, models=spec.models, rates=spec.rates, kinds=spec.kinds
                )
        live = [m for m in self.members if m.spec.name in specs and m.backend is not None]
        hosts = [(m.backend, m.spec.models) for m in live if m.backend is not None]
        rates = {(model, m.spec.name): rps for m in live for model, rps in m.spec.rates}
        table = RoutingTable.from_hosts(hosts, rates)
        planned: dict[str, float] = {}
        for member in live:
            for model, rps in member.spec.rates:
                planned[model] = planned.get(model, 0.0) + rps
        kinds = {model: kind for m in live for model, kind in m.spec.kinds}
        changed = table.models != self.router.picker.table.models or any(
            table.replicas(model) != self.router.picker.table.replicas(model)
            for model in table.models
            if model in self.router.picker.table.models
        )
        self.router.set_routes(table, planned, kinds)
        if changed:
            self.log(f"router: table switched ({len(live)} servers, {len(table.models)} models)")

    async def _unload_lost(self, member: Member, before: set[str]) -> None:
        """Unload what ``member`` gave up, once drained. After the switch nothing routes
        there, so a refused unload only leaves the model loaded: logged, not raised (the
        step stands)."""
        assert member.backend is not None
        for model in sorted(before - set(member.spec.models)):
            waited = await self._drain(member.backend, model)
            self.log(f"drained {model} on {member.spec.name} in {waited:.2f} s")
            try:
                await self._control(member, model, "unload")
            except StepFailedError as error:
                self.log(f"{error}; {model} stays loaded there, unrouted")

    async def _drain(self, backend: Backend, model: str | None) -> float:
        """Wait until the router has nothing in flight to ``backend`` (of ``model``, or of
        any model); the seconds waited (at most the drain timeout)."""
        began = self._clock()
        picker = self.router.picker
        while picker.in_flight(backend, model) > 0:
            if self._clock() - began > self.follow.drain_timeout_s:
                self.log(f"drain timed out after {self.follow.drain_timeout_s:g} s")
                break
            await asyncio.sleep(DRAIN_POLL_S)
        return self._clock() - began

    async def _stop(self, members: Sequence[Member], *, drain: bool) -> None:
        for member in members:
            if member in self.members:
                self.members.remove(member)  # first: the restart watcher must not see it exit
        await asyncio.gather(*(self._stop_one(member, drain=drain) for member in members))

    async def _stop_one(self, member: Member, *, drain: bool) -> None:
        """Drain (the router's requests to it), then stop; servers stop side by side. The
        stop runs even if the fleet is stopped during the drain (the member already left
        the list the fleet stops at exit, so nobody else would)."""
        try:
            if drain and member.backend is not None:
                waited = await self._drain(member.backend, None)
                self.log(f"drained server {member.spec.name} in {waited:.2f} s")
        finally:
            await stop_member(member, self.fleet.stop_timeout_s)
            if member.backend is not None:
                await self.router.forget(member.backend)
            self.log(f"stopped server {member.spec.name} (pid {member.child.pid})")


def _names(models: Sequence[str], shown: int = 6) -> str:
    head = ", ".join(models[:shown])
    return head + (f" and {len(models) - shown} more" if len(models) > shown else "")
