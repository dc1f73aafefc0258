"""Charts for plan files, three per plan (its instance types keep one colour throughout).

* Cost: USD/h of the mixed plan beside the cheapest plan on each instance type alone,
  each bar with its lower bound as a black tick; types that cannot serve every model
  alone are named at the foot of the chart.
* Utilisation: one point per server, memory against compute utilisation, with the caps
  the plan was packed under as dashed lines (a server past a cap is a planning error).
* Latency: the predicted p90 of each server against the SLO, when the profiles had
  measured points to predict from.

matplotlib is imported only when drawing (``new_axes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from inferpack.report.plan import PlanDocument, by_type, describe
from inferpack.report.plots import Plot, finish, new_axes, number, per_document

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MIXED_COLOUR = "#4a5263"
CAP_COLOUR = "#c0392b"
BOUND_MARKER_SIZE = 500  # points^2: a tick about as wide as a bar
ROTATE_LABELS_OVER = 4  # bars; more get slanted labels so they do not collide
POINT_SIZE = 50  # points^2
SERVER_LABELS_MAX = 24  # servers; more are numbered by position instead of named

__all__ = ["plan_plots"]


def _colours(document: PlanDocument) -> dict[str, str]:
    """One colour per instance type named anywhere in the plan, in sorted order."""
    types = {s.instance_type for s in document.plan.servers}
    types |= {str(a["instance_type"]) for a in document.plan.alternatives}
    return {name: f"C{index % 10}" for index, name in enumerate(sorted(types))}


def _cost_bars(document: PlanDocument) -> list[tuple[str, float, float | None, str]]:
    """(label, USD/h, lower bound, colour): the mixed plan, then each type alone."""
    colours = _colours(document)
    summary = document.plan.plan
    bars = [
        (
            "mixed",
            float(document.plan.totals["usd_per_hour"]),
            summary.lower_bound_usd_per_hour or None,
            MIXED_COLOUR,
        )
    ]
    for alternative in document.feasible:
        usd = number(alternative.get("usd_per_hour"))
        if usd is not None:
            name = str(alternative["instance_type"])
            bound = number(alternative.get("lower_bound_usd_per_hour"))
            bars.append((f"{name}\nalone", usd, bound, colours[name]))
    return bars


def _cost(document: PlanDocument, key: str) -> Plot | None:
    if not document.plan.servers:
        return None
    bars = _cost_bars(document)
    ax = new_axes()
    xs = list(range(len(bars)))
    drawn = ax.bar(xs, [b[1] for b in bars], color=[b[3] for b in bars], width=0.6)
    ax.bar_label(drawn, labels=[f"{b[1]:,.2f}" for b in bars], fontsize=8, padding=2)
    bounded = [(x, b[2]) for x, b in zip(xs, bars, strict=True) if b[2] is not None]
    if bounded:
        bx, by = zip(*bounded, strict=True)
        ax.scatter(bx, by, marker="_", s=BOUND_MARKER_SIZE, linewidths=2.5, color="black",
                   zorder=3, label="lower bound")  # fmt: skip
    ax.axhline(bars[0][1], linestyle=":", color=MIXED_COLOUR, label="mixed plan")
    rotation = 20 if len(bars) > ROTATE_LABELS_OVER else 0
    ax.set_xticks(xs, labels=[b[0] for b in bars], rotation=rotation)
    ax.set_ylim(0, max(b[1] for b in bars) * 1.15 or 1.0)
    ax.set_ylabel("USD per hour")
    infeasible = [str(a["instance_type"]) for a in document.infeasible]
    if infeasible:
        ax.set_xlabel(f"not feasible alone: {', '.join(infeasible)}")
    subject = describe(document)
    title = "Cost: the mixed plan beside each instance type alone"
    alt = (
        "Bar chart of USD per hour of the mixed plan and of the cheapest plan on each "
        f"instance type alone, each with its lower bound as a black tick, for {subject}"
    )
    return Plot(key, title, alt, finish(ax, title, subject))


def _caps(ax: Axes, document: PlanDocument) -> None:
    origin = "" if document.caps_from_file else " (default)"
    memory, compute = document.memory_cap * 100, document.compute_cap * 100
    ax.axvline(memory, linestyle="--", color=CAP_COLOUR, label=f"memory cap {memory:.0f} %{origin}")
    label = f"compute cap {compute:.0f} %{origin}"
    ax.axhline(compute, linestyle=":", color=CAP_COLOUR, label=label)


def _utilisation(document: PlanDocument, key: str) -> Plot | None:
    groups = by_type(document.plan)
    if not groups:
        return None
    colours = _colours(document)
    ax = new_axes()
    top = 100.0
    for name, servers in sorted(groups.items()):
        xs = [s.memory_utilization * 100 for s in servers]
        ys = [s.compute_utilization * 100 for s in servers]
        ax.scatter(xs, ys, s=POINT_SIZE, color=colours[name], alpha=0.75, edgecolors="white",
                   label=f"{name} ({len(servers)})")  # fmt: skip
        top = max(top, *xs, *ys)
    _caps(ax, document)
    ax.set_xlim(0, top * 1.05)
    ax.set_ylim(0, top * 1.05)
    ax.set_xlabel("memory utilisation (% of server memory, models + overhead)")
    ax.set_ylabel("compute utilisation (% of capacity at the SLO)")
    subject = describe(document)
    title = "Servers: memory vs compute utilisation (legend: servers per type)"
    alt = (
        "Scatter of each server's memory utilisation against its compute utilisation in "
        f"percent, coloured by instance type, with the caps as dashed lines, for {subject}"
    )
    return Plot(key, title, alt, finish(ax, title, subject))


def _latency(document: PlanDocument, key: str) -> Plot | None:
    servers = list(document.plan.servers)
    if all(s.predicted_p90_ms is None for s in servers):
        return None
    colours = _colours(document)
    ax = new_axes()
    for name in sorted({s.instance_type for s in servers}):
        points = [(x, s.predicted_p90_ms) for x, s in enumerate(servers, start=1)
                  if s.instance_type == name and s.predicted_p90_ms is not None]  # fmt: skip
        if points:
            xs, ys = zip(*points, strict=True)
            ax.bar(xs, ys, color=colours[name], label=name)
    slo = document.plan.plan.slo_p90_ms
    ax.axhline(slo, linestyle="--", color=CAP_COLOUR, label=f"SLO p90 {slo:g} ms")
    if len(servers) <= SERVER_LABELS_MAX:
        ax.set_xticks(range(1, len(servers) + 1), labels=[s.name for s in servers], rotation=45,
                      ha="right", fontsize=8)  # fmt: skip
    else:
        ax.set_xlabel(f"server (1 to {len(servers)}, in plan order)")
    ax.set_ylim(0, max(slo, *(s.predicted_p90_ms or 0.0 for s in servers)) * 1.1)
    ax.set_ylabel("predicted p90 latency (ms)")
    subject = describe(document)
    title = "Predicted p90 latency per server vs the SLO"
    alt = f"Bar chart of each server's predicted p90 latency in ms with the SLO line, for {subject}"
    return Plot(key, title, alt, finish(ax, title, subject))


def plan_plots(documents: Sequence[PlanDocument]) -> list[Plot]:
    """The charts of every plan, plan by plan: cost, utilisation, latency (when predicted).
    Keys are ``plan-cost`` etc. for the first plan, ``plan-cost-2`` for the second."""
    charts = [("plan-cost", _cost), ("plan-utilisation", _utilisation), ("plan-latency", _latency)]
    return per_document(documents, charts)
