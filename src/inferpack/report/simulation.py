"""Simulation sections and charts: ``inferpack simulate`` documents (``inferpack.simulation/1``).

One section per document: what was simulated (plan, demand, duration, router and network
terms), the fleet's p50/p90/p99 beside the SLO, and one row per server (simulated
percentiles beside the plan's predicted p90, utilisation, mean batch). One chart per
document: each server's simulated p50/p90/p99 with the plan's prediction and the SLO.
Rendering only; missing fields show as a dash and every text is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from inferpack.report.html import MISSING, Column, fmt, integer, num, sig3, table
from inferpack.report.plots import (
    Document,
    Plot,
    Result,
    finish,
    new_axes,
    number,
    per_document,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

SCHEMA = "inferpack.simulation/1"
SERVER_LABELS_MAX = 24  # servers; more are numbered by position instead of named
SLO_COLOUR = "#c0392b"
LOG_SPAN = 30  # latencies spanning more than this factor get a log axis

__all__ = ["SCHEMA", "describe", "is_simulation", "simulation_plots", "simulation_section"]

FLEET_COLUMNS: list[Column] = [
    ("requests", num(integer, "requests"), False),
    ("p50 ms", num(sig3, "p50_ms"), False),
    ("p90 ms", num(sig3, "p90_ms"), False),
    ("p99 ms", num(sig3, "p99_ms"), False),
    ("SLO p90 ms", num(sig3, "slo_p90_ms"), False),
    ("% above SLO", num(fmt("{:.2f}"), "over_slo_pct"), False),
    ("USD/h", num(fmt("{:,.3f}"), "usd_per_hour"), False),
]
SERVER_COLUMNS: list[Column] = [
    ("type", lambda row: None if row.get("instance_type") is None else str(row["instance_type"]),
     False),
    ("models", num(integer, "models"), False),
    ("req/s", num(fmt("{:,.1f}"), "rps"), False),
    ("p50 ms", num(sig3, "p50_ms"), False),
    ("p90 ms", num(sig3, "p90_ms"), False),
    ("p99 ms", num(sig3, "p99_ms"), False),
    ("planned p90 ms", num(sig3, "planned_p90_ms"), True),
    ("busy", num(fmt("{:.0%}"), "utilization"), False),
    ("mean batch", num(sig3, "mean_batch_size"), True),
]  # fmt: skip


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def is_simulation(document: Document) -> bool:
    return document.get("schema") == SCHEMA


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def servers_of(document: Document) -> list[Result]:
    rows = document.get("servers")
    return [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []


def describe(document: Document) -> str:
    spec = _mapping(document.get("spec"))
    rates = spec.get("trace") or spec.get("demand") or "the plan's rates"
    return f"simulation of {spec.get('plan', MISSING)} under {rates}"


def _meta(document: Document) -> str:
    spec = _mapping(document.get("spec"))
    parts = [
        f"{number(spec.get('duration_s')) or 0:g} simulated s",
        f"rate x{number(spec.get('rate_scale')) or 1:g}",
        f"router {number(spec.get('router_ms')) or 0:g} ms/request",
        f"network {number(spec.get('network_ms')) or 0:g} ms",
        f"seed {spec.get('seed', MISSING)}",
        f"{number(spec.get('wall_s')) or 0:g} s of wall time",
    ]
    return f'<p class="meta">{_e(", ".join(parts))}</p>'


def _slo_note(document: Document) -> str:
    fleet = _mapping(document.get("fleet"))
    over = fleet.get("servers_over_slo")
    if not isinstance(over, list) or not over:
        return '<p class="meta">every server\'s simulated p90 meets the SLO</p>'
    shown = ", ".join(str(name) for name in over[:SERVER_LABELS_MAX])
    return f'<p class="warning">servers whose simulated p90 is above the SLO: {_e(shown)}</p>'


def simulation_section(index: int, document: Document) -> str:
    servers = servers_of(document)
    names = [str(row.get("name", MISSING)) for row in servers]
    return "\n".join(
        [
            f'<section class="document simulation" id="simulation-{index}">',
            f"<h2>{_e(describe(document))}</h2>",
            _meta(document),
            _slo_note(document),
            "<h3>Fleet</h3>",
            table(FLEET_COLUMNS, [_mapping(document.get("fleet"))], "simulation-fleet"),
            f"<h3>Servers ({len(servers)})</h3>",
            table(SERVER_COLUMNS, servers, "simulation-servers", names),
            "</section>",
        ]
    )


def _chart(document: Document, key: str) -> Plot | None:
    servers = [s for s in servers_of(document) if number(s.get("p90_ms")) is not None]
    if not servers:
        return None
    ax = new_axes()
    xs = list(range(1, len(servers) + 1))
    for percentile, marker in (("p50", "v"), ("p90", "o"), ("p99", "^")):
        ys = [number(s.get(f"{percentile}_ms")) or float("nan") for s in servers]
        ax.scatter(xs, ys, marker=marker, label=f"simulated {percentile}", zorder=3)
    planned = [(x, number(s.get("planned_p90_ms"))) for x, s in zip(xs, servers, strict=True)]
    planned = [(x, y) for x, y in planned if y is not None]
    if planned:
        px, py = zip(*planned, strict=True)
        ax.scatter(px, py, marker="_", s=300, color="black", label="planned p90", zorder=4)
    slo = number(_mapping(document.get("fleet")).get("slo_p90_ms"))
    if slo is not None:
        ax.axhline(slo, linestyle="--", color=SLO_COLOUR, label=f"SLO p90 {slo:g} ms")
    if len(servers) <= SERVER_LABELS_MAX:
        labels = [str(s.get("name", "")) for s in servers]
        ax.set_xticks(xs, labels=labels, rotation=45, ha="right", fontsize=8)
    else:
        ax.set_xlabel(f"server (1 to {len(servers)}, in plan order)")
    _latency_axis(ax, servers, slo)
    subject = describe(document)
    title = "Simulated latency per server vs the plan and the SLO"
    alt = (
        "Scatter of each server's simulated p50, p90 and p99 latency in ms, with the plan's "
        f"predicted p90 as a black tick and the SLO as a dashed line, for {subject}"
    )
    return Plot(key, title, alt, finish(ax, title, subject))


def _latency_axis(ax: Axes, servers: Sequence[Result], slo: float | None) -> None:
    """A log scale (plain numbers on it) when the latencies span more than LOG_SPAN."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    values = [number(s.get(k)) for s in servers for k in ("p50_ms", "p99_ms")]
    found = [v for v in [*values, slo] if v is not None and v > 0]
    if found and max(found) / min(found) > LOG_SPAN:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("latency (ms, log scale)")
    else:
        ax.set_ylim(0, max(found, default=1.0) * 1.1)
        ax.set_ylabel("latency (ms)")


def simulation_plots(documents: Sequence[Document]) -> list[Plot]:
    return per_document(documents, [("simulation-servers", _chart)])
