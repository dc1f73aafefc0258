"""Fleet-policy sections and charts: ``benchmarks/fleet_policies.py`` documents
(``inferpack.policies/1``).

One section per document: what was compared (models, peak rate, intervals, SLO), one row
per policy (server-hours, USD a day, share of requests over the SLO, intervals whose p90
broke it, moves), and one chart: each policy's servers per interval, with the intervals
whose p90 broke the SLO marked. Rendering only; missing fields show as a dash.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from inferpack.report.html import MISSING, Column, fmt, integer, num, table
from inferpack.report.plots import Document, Plot, finish, new_axes, number, per_document

SCHEMA = "inferpack.policies/1"
SLO_COLOUR = "#c0392b"

__all__ = ["SCHEMA", "describe", "is_policies", "policies_plots", "policies_section"]

COLUMNS: list[Column] = [
    ("server-hours", num(fmt("{:,.0f}"), "server_hours"), False),
    ("USD / day", num(fmt("{:,.2f}"), "usd_per_day"), False),
    ("% requests over SLO", num(fmt("{:.3f}"), "over_slo_pct"), False),
    ("intervals p90 > SLO", num(integer, "intervals_over_slo_p90"), False),
    ("moves", num(integer, "moves"), False),
]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def is_policies(document: Document) -> bool:
    return document.get("schema") == SCHEMA


def _rows(document: Document) -> list[Mapping[str, Any]]:
    rows = document.get("policies")
    return [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []


def describe(document: Document) -> str:
    models = number(document.get("models"))
    peak = number(document.get("peak_rps"))
    parts = [
        f"{models:,.0f} models" if models is not None else MISSING,
        f"{peak:,.0f} req/s at peak" if peak is not None else MISSING,
    ]
    return "fleet policies: " + ", ".join(parts)


def policies_section(index: int, document: Document) -> str:
    rows = [
        {**row, "over_slo_pct": (number(row.get("over_slo_share")) or 0.0) * 100}
        for row in _rows(document)
    ]
    names = [str(row.get("name", MISSING)) for row in rows]
    get = document.get
    meta = (
        f"{get('intervals', MISSING)} intervals of {get('interval_hours', MISSING)} h, "
        f"SLO p90 {get('slo_p90_ms', MISSING)} ms; profile: {get('profile', MISSING)}"
    )
    return "\n".join(
        [
            f'<section class="document policies" id="policies-{index}">',
            f"<h2>{_e(describe(document))}</h2>",
            f'<p class="meta">{_e(meta)}</p>',
            table(COLUMNS, rows, "policies", names),
            "</section>",
        ]
    )


def _chart(document: Document, key: str) -> Plot | None:
    series = document.get("intervals_by_policy")
    if not isinstance(series, Mapping) or not series:
        return None
    ax = new_axes()
    broke = False
    for name, rows in series.items():
        if not isinstance(rows, list):
            continue
        points = [
            (number(r.get("interval")), number(r.get("servers")), number(r.get("p90_ms")))
            for r in rows
            if isinstance(r, Mapping)
        ]
        xs = [x for x, y, _ in points if x is not None and y is not None]
        ys = [y for x, y, _ in points if x is not None and y is not None]
        ax.plot(xs, ys, marker="o", markersize=3, label=str(name))
        slo = number(document.get("slo_p90_ms"))
        over = [
            (x, y)
            for x, y, p90 in points
            if x is not None and y is not None and slo is not None and p90 is not None and p90 > slo
        ]
        if over:
            broke = True
            ox, oy = zip(*over, strict=True)
            ax.scatter(ox, oy, s=90, facecolors="none", edgecolors=SLO_COLOUR, zorder=4)
    if broke:
        ax.scatter([], [], s=90, facecolors="none", edgecolors=SLO_COLOUR, label="p90 > SLO")
    ax.set_xlabel("interval")
    ax.set_ylabel("servers")
    ax.set_ylim(bottom=0)
    title = "Servers per interval by policy"
    alt = (
        "Line chart of the number of servers each policy runs in each interval, intervals "
        f"whose p90 broke the SLO circled, for {describe(document)}"
    )
    return Plot(key, title, alt, finish(ax, title, describe(document)))


def policies_plots(documents: Sequence[Document]) -> list[Plot]:
    return per_document(documents, [("policies-servers", _chart)])
