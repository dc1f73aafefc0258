"""Plan sections of the report: ``plan.yaml`` files written by ``inferpack plan``.

One section per plan: what was solved (SLO, solver, status, caps), the planner's notes,
a summary row (servers, USD/h, USD per model-hour, models, req/s, bound, gap, solve
time), the mixed plan beside the cheapest plan on each instance type alone, one row per
instance type used, and every server (collapsed). The charts are in ``plan_plots.py``.

The caps come from the ``plan`` mapping (``max_memory_utilization``,
``max_compute_utilization``, which ``inferpack plan`` writes); a hand-written plan without
them is drawn with the planner's defaults, and the page says so. Rendering only; every
text from a file is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import yaml

from inferpack.errors import ConfigError, InvalidInputError
from inferpack.plan.formats import Plan, ServerPlan, parse_plan
from inferpack.plan.problem import PlanOptions
from inferpack.report.html import MISSING, Column, fmt, integer, num, sig3, table, thousands
from inferpack.report.plots import Result, number

PLAN_SUFFIXES = (".yaml", ".yml")
DEFAULT_OPTIONS = PlanOptions(slo_p90_ms=1.0)  # only its caps are read
MODELS_SHOWN = 4  # a server's row names this many models, then counts the rest

__all__ = ["PLAN_SUFFIXES", "PlanDocument", "describe", "is_plan_path", "load_plan", "plan_section"]


@dataclass(frozen=True, slots=True)
class PlanDocument:
    """One plan file as the report shows it."""

    source: str  # the path as given: the section's name
    plan: Plan
    memory_cap: float  # max_memory_utilization the plan was packed under (fraction)
    compute_cap: float  # max_compute_utilization (fraction)
    caps_from_file: bool  # False: the planner's defaults, plan.yaml did not say

    @property
    def feasible(self) -> list[Mapping[str, Any]]:
        """The single-type alternatives that can serve every model, cheapest first."""
        rows = [a for a in self.plan.alternatives if a.get("feasible") is not False]
        return sorted(rows, key=lambda a: number(a.get("usd_per_hour")) or 0.0)

    @property
    def infeasible(self) -> list[Mapping[str, Any]]:
        return [a for a in self.plan.alternatives if a.get("feasible") is False]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def is_plan_path(path: Path) -> bool:
    return Path(path).suffix.lower() in PLAN_SUFFIXES


# ---------------------------------------------------------------- loading


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidInputError(f"{path}: cannot read: {error.strerror or error}") from error
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise InvalidInputError(f"{path}: not valid YAML: {error}") from error


def _check_alternatives(data: Mapping[str, Any], path: Path) -> None:
    alternatives = data.get("alternatives")
    if alternatives is None:
        return
    if not isinstance(alternatives, list):
        raise InvalidInputError(f"{path}: alternatives must be a list")
    for index, entry in enumerate(alternatives):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("instance_type"), str):
            raise InvalidInputError(
                f"{path}: alternatives[{index}] must be a mapping with an instance_type"
            )


def _cap(summary: object, key: str) -> float | None:
    value = number(summary.get(key)) if isinstance(summary, Mapping) else None
    return value if value is not None and 0 < value <= 1 else None


def load_plan(path: Path) -> PlanDocument:
    """A plan.yaml file, validated by the planner's own reader. InvalidInputError naming
    the file (and every problem the reader found) for anything else."""
    data = _read_yaml(path)
    try:
        plan = parse_plan(data, path)
    except ConfigError as error:
        raise InvalidInputError(str(error)) from error  # names the file and every problem
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"{path}: not a valid plan: {error}") from error
    _check_alternatives(data, path)
    memory = _cap(data.get("plan"), "max_memory_utilization")
    compute = _cap(data.get("plan"), "max_compute_utilization")
    return PlanDocument(
        source=str(path),
        plan=plan,
        memory_cap=DEFAULT_OPTIONS.max_memory_utilization if memory is None else memory,
        compute_cap=DEFAULT_OPTIONS.max_compute_utilization if compute is None else compute,
        caps_from_file=memory is not None and compute is not None,
    )


# ---------------------------------------------------------------- rendering


def usd(value: float | None) -> str | None:
    """Cents from 1 USD up, four significant digits below (prices per model-hour)."""
    if value is None:
        return None
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.4g}"


def _signed_percent(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:+.1f} %"


percent_of_one = fmt("{:.1f}", 100.0)

SUMMARY_COLUMNS: list[Column] = [
    ("servers", num(integer, "servers"), False),
    ("USD/h", num(usd, "usd_per_hour"), False),
    ("USD per model-hour", num(usd, "usd_per_model_hour"), False),
    ("models", num(integer, "models"), False),
    ("replicas", num(integer, "replicas"), False),
    ("req/s", num(thousands, "rps"), False),
    ("lower bound USD/h", num(usd, "lower_bound_usd_per_hour"), False),
    ("gap %", num(fmt("{:.2f}", 100.0), "gap"), False),
    ("solve s", num(sig3, "solve_seconds"), False),
]
COMPARISON_COLUMNS: list[Column] = [
    ("servers", num(integer, "servers"), False),
    ("USD/h", num(usd, "usd_per_hour"), False),
    ("USD per model-hour", num(usd, "usd_per_model_hour"), False),
    ("lower bound USD/h", num(usd, "lower_bound_usd_per_hour"), False),
    ("vs mixed", num(_signed_percent, "vs_mixed"), False),
]
TYPE_COLUMNS: list[Column] = [
    ("servers", num(integer, "servers"), False),
    ("models", num(integer, "models"), False),
    ("replicas", num(integer, "replicas"), False),
    ("req/s", num(thousands, "rps"), False),
    ("USD/h", num(usd, "usd_per_hour"), False),
    ("mean memory %", num(percent_of_one, "memory_utilization"), False),
    ("mean compute %", num(percent_of_one, "compute_utilization"), False),
    ("max predicted p90 ms", num(sig3, "predicted_p90_ms"), True),
]


def _model_names(server: Result) -> str | None:
    names = [str(name) for name in server.get("names") or ()]
    shown = ", ".join(names[:MODELS_SHOWN])
    more = len(names) - MODELS_SHOWN
    return f"{shown} (+{more} more)" if more > 0 else shown or None


SERVER_COLUMNS: list[Column] = [
    ("replicas", num(integer, "replicas"), False),
    ("req/s", num(thousands, "rps"), False),
    ("USD/h", num(usd, "usd_per_hour"), False),
    ("memory MB", num(thousands, "memory_mb"), False),
    ("memory %", num(percent_of_one, "memory_utilization"), False),
    ("compute %", num(percent_of_one, "compute_utilization"), False),
    ("predicted p90 ms", num(sig3, "predicted_p90_ms"), True),
    ("tolerated slowdown", num(sig3, "tolerated_slowdown"), True),
    ("models", _model_names, False),
]


def describe(document: PlanDocument) -> str:
    """A short name: ``plan out/plan.yaml``."""
    return f"plan {document.source}"


def _meta(document: PlanDocument) -> str:
    summary = document.plan.plan
    status = f" ({summary.status})" if summary.status else ""
    origin = "from the plan file" if document.caps_from_file else "the planner's defaults"
    parts = [
        f"SLO: p90 \u2264 {summary.slo_p90_ms:g} ms",
        f"solver: {summary.solver or MISSING}{status}",
        f"solved in {summary.solve_seconds:.3g} s",
        f"caps: memory {document.memory_cap:.0%}, compute {document.compute_cap:.0%} ({origin})",
    ]
    return f'<p class="meta spec">{_e(" · ".join(parts))}</p>'


def _notes(document: PlanDocument) -> str:
    notes = document.plan.plan.notes
    if not notes:
        return ""
    items = "".join(f"<li>{_e(note)}</li>" for note in notes)
    return f'<h3>Notes</h3><ul class="warnings">{items}</ul>'


def _summary_row(plan: Plan) -> dict[str, Any]:
    summary = plan.plan
    return {
        **plan.totals,
        "lower_bound_usd_per_hour": summary.lower_bound_usd_per_hour,
        "gap": summary.gap,
        "solve_seconds": summary.solve_seconds,
    }


def _comparison(document: PlanDocument) -> str:
    totals = document.plan.totals
    mixed_usd = float(totals["usd_per_hour"])
    rows: list[Result] = [{**_summary_row(document.plan), "vs_mixed": None}]
    labels = ["mixed (this plan)"]
    for alternative in document.feasible:
        alone = number(alternative.get("usd_per_hour"))
        share = alone / mixed_usd - 1 if alone is not None and mixed_usd > 0 else None
        rows.append({**alternative, "vs_mixed": share})
        labels.append(f"{alternative['instance_type']} alone")
    parts = [table(COMPARISON_COLUMNS, rows, "plan-alternatives", labels)]
    if not document.plan.alternatives:
        parts.append("<p>The plan file lists no single-type alternatives.</p>")
    if document.infeasible:
        items = "".join(
            f"<li>{_e(a['instance_type'])}: {_e(a.get('reason') or 'no reason given')}</li>"
            for a in document.infeasible
        )
        parts.append(f'<p>Not feasible alone:</p><ul class="infeasible">{items}</ul>')
    return "\n".join(parts)


def _max(values: Sequence[float | None]) -> float | None:
    found = [value for value in values if value is not None]
    return max(found) if found else None


def _type_row(servers: Sequence[ServerPlan]) -> dict[str, Any]:
    return {
        "servers": len(servers),
        "models": len({m.name for s in servers for m in s.models}),
        "replicas": sum(len(s.models) for s in servers),
        "rps": sum(m.rps for s in servers for m in s.models),
        "usd_per_hour": sum(s.usd_per_hour for s in servers),
        "memory_utilization": fmean(s.memory_utilization for s in servers),
        "compute_utilization": fmean(s.compute_utilization for s in servers),
        "predicted_p90_ms": _max([s.predicted_p90_ms for s in servers]),
    }


def by_type(plan: Plan) -> dict[str, list[ServerPlan]]:
    """The plan's servers grouped by instance type, in the plan's order."""
    groups: dict[str, list[ServerPlan]] = {}
    for server in plan.servers:
        groups.setdefault(server.instance_type, []).append(server)
    return groups


def _server_row(server: ServerPlan) -> dict[str, Any]:
    return {
        "replicas": len(server.models),
        "rps": sum(m.rps for m in server.models),
        "usd_per_hour": server.usd_per_hour,
        "memory_mb": server.memory_mb,
        "memory_utilization": server.memory_utilization,
        "compute_utilization": server.compute_utilization,
        "predicted_p90_ms": server.predicted_p90_ms,
        "tolerated_slowdown": server.tolerated_slowdown,
        "names": [m.name for m in server.models],
    }


def _servers(plan: Plan) -> str:
    rows = [_server_row(server) for server in plan.servers]
    labels = [server.name for server in plan.servers]
    return (
        f"<details><summary>Servers ({len(rows)})</summary>\n"
        f"{table(SERVER_COLUMNS, rows, 'plan-servers', labels)}\n</details>"
    )


def plan_section(index: int, document: PlanDocument) -> str:
    """The section of one plan: meta line, notes, summary, the single-type comparison,
    per-instance-type totals and the servers."""
    groups = by_type(document.plan)
    types = [_type_row(servers) for servers in groups.values()]
    return "\n".join(
        [
            f'<section class="document plan" id="plan-{index}">',
            f"<h2>{_e(describe(document))}</h2>",
            _meta(document),
            _notes(document),
            "<h3>Summary</h3>",
            table(SUMMARY_COLUMNS, [_summary_row(document.plan)], "plan-summary"),
            "<h3>The mixed plan beside each instance type alone</h3>",
            _comparison(document),
            f"<h3>Per instance type ({len(groups)})</h3>",
            table(TYPE_COLUMNS, types, "plan-types", list(groups)),
            _servers(document.plan),
            "</section>",
        ]
    )
