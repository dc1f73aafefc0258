"""The planner's files: profiles.yaml, the demand CSV and plan.yaml (docs/fleet-files.md).

Readers validate every entry and report every problem of a file at once, as one
``ConfigError`` naming the file, the entry and the field. Writers emit plain YAML a person
can read and edit; unknown keys are kept out of the dataclasses but tolerated on input.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inferpack.errors import ConfigError
from inferpack.plan.server_model import ServerModel, parse_server_model, server_model_to_dict

# A level counts only when the server answered at least this share of the offered rate
# (``inferpack profile``'s own rule; it also allows Poisson slack for short levels).
MIN_ANSWERED_SHARE = 0.9


@dataclass(frozen=True)
class RatePoint:
    """One measured open-loop level of a profile."""

    rate_rps: float
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    error_pct: float

    def answered(self, min_share: float = MIN_ANSWERED_SHARE) -> bool:
        """Whether the server kept up with the offered rate at this level."""
        return self.achieved_rps >= min_share * self.rate_rps

    @property
    def sustained_rps(self) -> float:
        """What the level proves a server sustains: never more than it answered."""
        return min(self.rate_rps, self.achieved_rps)


@dataclass(frozen=True)
class Profile:
    """What one server of ``instance_type`` sustains for models of ``kind`` at the SLO."""

    kind: str
    instance_type: str
    model_memory_mb: float
    capacity_rps: float  # all models of one server together, at slo_p90_ms
    slo_p90_ms: float
    source: str
    max_models: int | None = None
    points: tuple[RatePoint, ...] = ()  # latency vs rate; absent in hand-written profiles
    models_per_server: int | None = None  # how many copies the measurement served
    server: ServerModel | None = None  # the mechanism, for simulate (plan/server_model.py)

    def p90_at_ms(self, rate_rps: float) -> float | None:
        """p90 predicted at a total rate, interpolated between measured points."""
        points = sorted(self.points, key=lambda p: p.rate_rps)
        if not points:
            return None
        if rate_rps <= points[0].rate_rps:
            return points[0].p90_ms
        for low, high in itertools.pairwise(points):
            if rate_rps <= high.rate_rps:
                share = (rate_rps - low.rate_rps) / (high.rate_rps - low.rate_rps)
                return low.p90_ms + share * (high.p90_ms - low.p90_ms)
        return points[-1].p90_ms


@dataclass(frozen=True)
class Demand:
    model: str
    kind: str
    rps: float


@dataclass(frozen=True)
class ModelShare:
    """One model (or one replica of it) on a server, with the rate sent to it."""

    name: str
    kind: str
    rps: float


@dataclass(frozen=True)
class ServerPlan:
    name: str
    instance_type: str
    usd_per_hour: float
    models: tuple[ModelShare, ...]
    memory_mb: float
    memory_utilization: float
    compute_utilization: float
    predicted_p90_ms: float | None
    # How many times slower than profiled the host may compute with the p90 still within
    # the SLO (plan/tail.py); None where the server was not simulated.
    tolerated_slowdown: float | None = None


@dataclass(frozen=True)
class PlanSummary:
    slo_p90_ms: float
    solver: str
    solve_seconds: float
    objective_usd_per_hour: float
    lower_bound_usd_per_hour: float
    gap: float  # (objective - bound) / objective
    status: str = ""
    notes: tuple[str, ...] = ()
    # The caps the plan was packed under (None in a plan file written without them).
    max_memory_utilization: float | None = None
    max_compute_utilization: float | None = None
    server_overhead_mb: float | None = None
    slowdown_margin: float | None = None  # plan --slowdown-margin (None: written without)


@dataclass(frozen=True)
class Plan:
    plan: PlanSummary
    servers: tuple[ServerPlan, ...]
    alternatives: tuple[dict[str, Any], ...] = field(default=())  # cheapest per type alone
    # plan --previous: moves (model, from, to), servers_added, servers_removed
    changes: dict[str, Any] | None = None

    @property
    def totals(self) -> dict[str, Any]:
        usd = sum(s.usd_per_hour for s in self.servers)
        names = {m.name for s in self.servers for m in s.models}
        rps = sum(m.rps for s in self.servers for m in s.models)
        return {
            "servers": len(self.servers),
            "usd_per_hour": round(usd, 6),
            "usd_per_model_hour": round(usd / len(names), 8) if names else 0.0,
            "models": len(names),
            "replicas": sum(len(s.models) for s in self.servers),
            "rps": round(rps, 6),
        }


# ---------------------------------------------------------------- reading


def _problems_error(path: Path | str, problems: list[str]) -> ConfigError:
    return ConfigError([f"{path}: {p}" for p in problems])


def _positive(entry: Mapping[str, Any], key: str, where: str, problems: list[str]) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append(f"{where}: {key} must be a number (got {value!r})")
        return math.nan
    if value <= 0:
        problems.append(f"{where}: {key} must be > 0 (got {value})")
    return float(value)


def _text(entry: Mapping[str, Any], key: str, where: str, problems: list[str]) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: {key} must be a non-empty string (got {value!r})")
        return ""
    return value.strip()


def _points(raw: Any, where: str, problems: list[str]) -> tuple[RatePoint, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{where}: points must be a list")
        return ()
    points = []
    for i, item in enumerate(raw):
        at = f"{where} points[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: must be a mapping")
            continue
        values = {}
        for key in ("rate_rps", "achieved_rps", "p50_ms", "p90_ms", "p99_ms", "error_pct"):
            value = item.get(key, 0.0 if key == "error_pct" else None)
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{at}: {key} must be a number (got {value!r})")
                value = math.nan
            values[key] = float(value)
        points.append(RatePoint(**values))
    return tuple(points)


def parse_profiles(data: Any, source: Path | str) -> list[Profile]:
    """Profiles from a loaded profiles.yaml document; every problem reported at once."""
    if not isinstance(data, Mapping) or not isinstance(data.get("profiles"), list):
        raise ConfigError([f"{source}: expected a mapping with a 'profiles' list"])
    problems: list[str] = []
    profiles = []
    for i, entry in enumerate(data["profiles"]):
        where = f"profiles[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: must be a mapping")
            continue
        kind = _text(entry, "kind", where, problems)
        instance_type = _text(entry, "instance_type", where, problems)
        where = f"profiles[{i}] ({kind or '?'} on {instance_type or '?'})"
        max_models = entry.get("max_models")
        if max_models is not None and (
            isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1
        ):
            problems.append(f"{where}: max_models must be an integer >= 1 (got {max_models!r})")
            max_models = None
        per_server = entry.get("models_per_server")
        profiles.append(
            Profile(
                kind=kind,
                instance_type=instance_type,
                model_memory_mb=_positive(entry, "model_memory_mb", where, problems),
                capacity_rps=_positive(entry, "capacity_rps", where, problems),
                slo_p90_ms=_positive(entry, "slo_p90_ms", where, problems),
                source=_text(entry, "source", where, problems),
                max_models=max_models,
                points=_points(entry.get("points"), where, problems),
                models_per_server=per_server if isinstance(per_server, int) else None,
                server=parse_server_model(entry.get("server"), where, problems),
            )
        )
    seen: dict[tuple[str, str, int | None], int] = {}
    for i, profile in enumerate(profiles):
        key = profile_key(profile)
        if key in seen:
            problems.append(f"profiles[{i}]: {describe_key(key)} repeats profiles[{seen[key]}]")
        seen[key] = i
    problems.extend(_count_problems(profiles))
    if problems:
        raise _problems_error(source, problems)
    return profiles


def profile_key(profile: Profile) -> tuple[str, str, int | None]:
    """What identifies a profile entry: its kind and instance type, and the number of models
    it was measured with (``profile --models-per-server 1,4,16,64`` writes one entry per
    count)."""
    return (profile.kind, profile.instance_type, profile.models_per_server)


def describe_key(key: tuple[str, str, int | None]) -> str:
    kind, instance_type, count = key
    return f"{kind} on {instance_type}" + ("" if count is None else f" with {count} models")


def _count_problems(profiles: Iterable[Profile]) -> list[str]:
    """Several entries of one kind and instance type must each name their model count."""
    groups: dict[tuple[str, str], list[Profile]] = {}
    for profile in profiles:
        groups.setdefault((profile.kind, profile.instance_type), []).append(profile)
    return [
        f"{kind} on {instance_type}: {len(group)} entries, so each needs its models_per_server"
        for (kind, instance_type), group in groups.items()
        if len(group) > 1 and any(p.models_per_server is None for p in group)
    ]


def read_profiles(paths: Iterable[Path]) -> list[Profile]:
    """Profiles of several files; a (kind, instance_type, models_per_server) entry may
    appear only once."""
    profiles: list[Profile] = []
    origin: dict[tuple[str, str, int | None], Path] = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as error:
            raise ConfigError([f"cannot read profiles {path}: {error.strerror}"]) from None
        except yaml.YAMLError as error:
            raise ConfigError([f"{path}: not valid YAML: {error}"]) from None
        for profile in parse_profiles(data, path):
            key = profile_key(profile)
            if key in origin:
                raise ConfigError([f"{path}: {describe_key(key)} is also in {origin[key]}"])
            origin[key] = path
            profiles.append(profile)
    problems = _count_problems(profiles)
    if problems:
        raise ConfigError(problems)
    return profiles


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    data = asdict(profile)
    data["points"] = [asdict(p) for p in profile.points]
    data["server"] = None if profile.server is None else server_model_to_dict(profile.server)
    for key in ("max_models", "models_per_server", "server"):
        if data[key] is None:
            del data[key]
    if not data["points"]:
        del data["points"]
    return data


def write_profiles(
    path: Path, profiles: Iterable[Profile], extra: Mapping[str, Any] | None = None
) -> None:
    document: dict[str, Any] = dict(extra or {})
    document["profiles"] = [profile_to_dict(p) for p in profiles]
    Path(path).write_text(yaml.safe_dump(document, sort_keys=False))


DEMAND_COLUMNS = ("model", "kind", "rps")


def read_demand(path: Path) -> list[Demand]:
    """The demand CSV: a header ``model,kind,rps`` and one row per model."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError([f"cannot read demand {path}: {error.strerror}"]) from None
    lines = text.splitlines()
    header = tuple(h.strip() for h in next(csv.reader(lines[:1]), []))
    reader = csv.DictReader(lines[1:], fieldnames=list(header))
    if header[:3] != DEMAND_COLUMNS:
        raise ConfigError(
            [f"{path}: the header must start with model,kind,rps (got {','.join(header)})"]
        )
    problems: list[str] = []
    demand: list[Demand] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        model = (row.get("model") or "").strip()
        kind = (row.get("kind") or "").strip()
        raw = (row.get("rps") or "").strip()
        if not model or not kind:
            problems.append(f"line {line}: model and kind must not be empty")
            continue
        try:
            rps = float(raw)
        except ValueError:
            problems.append(f"line {line}: rps of {model} is not a number ({raw!r})")
            continue
        if not math.isfinite(rps) or rps < 0:
            problems.append(f"line {line}: rps of {model} must be >= 0 (got {raw})")
            continue
        if model in seen:
            problems.append(f"line {line}: {model} repeats line {seen[model]}")
            continue
        seen[model] = line
        demand.append(Demand(model, kind, rps))
    if problems:
        raise _problems_error(path, problems)
    if not demand:
        raise ConfigError([f"{path}: no models"])
    return demand


def write_demand(path: Path, demand: Iterable[Demand]) -> None:
    lines = [",".join(DEMAND_COLUMNS)]
    lines += [f"{d.model},{d.kind},{d.rps:g}" for d in demand]
    Path(path).write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- plan.yaml


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    summary = asdict(plan.plan)
    summary["notes"] = list(plan.plan.notes)
    servers = []
    for server in plan.servers:
        entry = asdict(server)
        entry["models"] = [asdict(m) for m in server.models]
        servers.append(entry)
    document: dict[str, Any] = {"plan": summary, "servers": servers, "totals": plan.totals}
    if plan.alternatives:
        document["alternatives"] = [dict(a) for a in plan.alternatives]
    if plan.changes is not None:
        document["changes"] = plan.changes
    return document


def write_plan(path: Path, plan: Plan) -> None:
    Path(path).write_text(yaml.safe_dump(plan_to_dict(plan), sort_keys=False))


def parse_plan(data: Any, source: Path | str) -> Plan:
    if not isinstance(data, Mapping) or not isinstance(data.get("servers"), list):
        raise ConfigError([f"{source}: expected a plan with a 'servers' list"])
    raw_summary = data.get("plan")
    if not isinstance(raw_summary, Mapping):
        raise ConfigError([f"{source}: expected a 'plan' mapping"])
    problems: list[str] = []
    try:
        summary = PlanSummary(
            slo_p90_ms=float(raw_summary["slo_p90_ms"]),
            solver=str(raw_summary.get("solver", "")),
            solve_seconds=float(raw_summary.get("solve_seconds", 0.0)),
            objective_usd_per_hour=float(raw_summary["objective_usd_per_hour"]),
            lower_bound_usd_per_hour=float(raw_summary.get("lower_bound_usd_per_hour", 0.0)),
            gap=float(raw_summary.get("gap", 0.0)),
            status=str(raw_summary.get("status", "")),
            notes=tuple(str(n) for n in raw_summary.get("notes") or ()),
            max_memory_utilization=_optional_float(raw_summary.get("max_memory_utilization")),
            max_compute_utilization=_optional_float(raw_summary.get("max_compute_utilization")),
            server_overhead_mb=_optional_float(raw_summary.get("server_overhead_mb")),
            slowdown_margin=_optional_float(raw_summary.get("slowdown_margin")),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError([f"{source}: plan: missing or invalid field {error}"]) from None
    servers = []
    names: set[str] = set()
    for i, raw in enumerate(data["servers"]):
        where = f"servers[{i}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: must be a mapping")
            continue
        name = _text(raw, "name", where, problems)
        if name in names:
            problems.append(f"{where}: server name {name} repeats")
        names.add(name)
        models = []
        for j, model in enumerate(raw.get("models") or ()):
            if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
                problems.append(f"{where} models[{j}]: needs a name")
                continue
            rps = _number(model, "rps", f"{where} models[{j}]", problems)
            models.append(ModelShare(model["name"], str(model.get("kind", "")), rps or 0.0))
        if not models:
            problems.append(f"{where}: has no models")
        servers.append(
            ServerPlan(
                name=name,
                instance_type=_text(raw, "instance_type", where, problems),
                usd_per_hour=_number(raw, "usd_per_hour", where, problems) or 0.0,
                models=tuple(models),
                memory_mb=_number(raw, "memory_mb", where, problems) or 0.0,
                memory_utilization=_number(raw, "memory_utilization", where, problems) or 0.0,
                compute_utilization=_number(raw, "compute_utilization", where, problems) or 0.0,
                predicted_p90_ms=_number(raw, "predicted_p90_ms", where, problems),
                tolerated_slowdown=_number(raw, "tolerated_slowdown", where, problems),
            )
        )
    if problems:
        raise _problems_error(source, problems)
    return Plan(summary, tuple(servers), tuple(data.get("alternatives") or ()))


def _number(raw: Mapping[str, Any], key: str, where: str, problems: list[str]) -> float | None:
    """A numeric field (None when absent); anything else is a problem naming the field."""
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{where}: {key} must be a number, got {value!r}")
        return None
    return float(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def read_plan(path: Path) -> Plan:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ConfigError([f"cannot read plan {path}: {error.strerror}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}"]) from None
    return parse_plan(data, path)
