"""The loadtest part of the report: levels table and the throughput-latency curve.

Reads ``inferpack.loadtest/1`` documents (see ``inferpack loadtest``); rendering only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inferpack.report.html import Column, _e, _fmt, _num, _table, integer, sig3, thousands
from inferpack.report.plots import Plot, _finish, _new_axes, field

SCHEMA = "inferpack.loadtest/1"
Document = Mapping[str, Any]


def is_loadtest(document: Document) -> bool:
    return document.get("schema") == SCHEMA


def describe(document: Document) -> str:
    spec = document.get("spec") or {}
    models = spec.get("models") or []
    shown = models[0] if len(models) == 1 else f"{len(models)} models"
    return f"loadtest {shown} at {spec.get('url', '?')} ({spec.get('transport', '?')})"


def _level(level: Mapping[str, Any]) -> str | None:
    if level.get("concurrency") is not None:
        return f"c={level['concurrency']}"
    rate = field(level, "rate_rps")
    return None if rate is None else f"{rate:g} req/s"


def _errors(level: Mapping[str, Any]) -> str | None:
    errors = level.get("errors") or {}
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) or "none"


LEVEL_COLUMNS: list[Column] = [
    ("level", _level, False),
    ("stable", lambda r: "yes" if r.get("stable") else "no", False),
    ("requests", _num(integer, "requests"), False),
    ("req/s", _num(thousands, "throughput_rps"), False),
    ("items/s", _num(thousands, "items_per_s"), False),
    ("p50 ms", _num(sig3, "latency_ms", "p50"), False),
    ("p90 ms", _num(sig3, "latency_ms", "p90"), False),
    ("p95 ms", _num(sig3, "latency_ms", "p95"), False),
    ("p99 ms", _num(sig3, "latency_ms", "p99"), False),
    ("max ms", _num(sig3, "latency_ms", "max"), False),
    ("errors", _errors, False),
    ("lateness p99 ms", _num(sig3, "send_lateness_ms", "p99"), True),
    ("late %", _num(_fmt("{:.1f}", 100.0), "late_fraction"), True),
]


def loadtest_section(index: int, document: Document) -> str:
    spec = document.get("spec") or {}
    levels = [lv for lv in document.get("levels") or [] if isinstance(lv, Mapping)]
    facts = (
        f"{spec.get('mode', '?')} loop · distribution {spec.get('distribution', '?')} · "
        f"{len(spec.get('models') or [])} model(s) · batch {spec.get('batch_size', '?')} · "
        f"{spec.get('workers', '?')} worker process(es) · windows of "
        f"{field(spec, 'window_s') or 0:.3g} s after {spec.get('warmup_s', '?')} s warm-up"
    )
    warnings = "".join(f'<li class="noisy">{_e(w)}</li>' for w in document.get("warnings") or [])
    marked = [{**level, "noisy": not level.get("stable")} for level in levels]
    return (
        f'<section class="document" id="loadtest-{index}">\n<h2>{_e(describe(document))}</h2>\n'
        f'<p class="meta">{_e(facts)}</p>\n<p class="meta">{_e(document.get("method", ""))}</p>\n'
        + (f"<h3>Warnings</h3><ul>{warnings}</ul>\n" if warnings else "")
        + f"<h3>Levels ({len(levels)})</h3>\n{_table(LEVEL_COLUMNS, marked, 'results')}\n"
        "</section>"
    )


def _curve(documents: Sequence[Document]) -> Plot | None:
    ax = _new_axes()
    drawn = False
    for document in documents:
        levels = [lv for lv in document.get("levels") or [] if isinstance(lv, Mapping)]
        points = sorted(
            ((x, lv) for lv in levels if (x := field(lv, "throughput_rps")) is not None),
            key=lambda p: p[0],
        )
        for key, style in (("p50", "-o"), ("p99", "--s")):
            curve = [(x, y) for x, lv in points if (y := field(lv, "latency_ms", key)) is not None]
            if curve:
                ax.plot(
                    [x for x, _ in curve],
                    [y for _, y in curve],
                    style,
                    label=f"{describe(document)} {key}",
                )
                drawn = True
        for x, lv in points:
            y = field(lv, "latency_ms", "p99")
            if y is not None:
                ax.annotate(
                    _level(lv) or "",
                    (x, y),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize="x-small",
                )
    if not drawn:
        return None
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms)")
    subject = ", ".join(describe(d) for d in documents)
    png = _finish(ax, "Throughput-latency curve", subject)
    return Plot(
        "curve", "Throughput-latency curve", f"latency p50 and p99 vs throughput: {subject}", png
    )


def _rates(documents: Sequence[Document]) -> Plot | None:
    ax = _new_axes()
    drawn = False
    for document in documents:
        levels = [lv for lv in document.get("levels") or [] if isinstance(lv, Mapping)]
        found = [(field(lv, "rate_rps"), field(lv, "throughput_rps")) for lv in levels]
        pairs = sorted((a, b) for a, b in found if a is not None and b is not None)
        if pairs:
            ax.plot([a for a, _ in pairs], [b for _, b in pairs], "-o", label=describe(document))
            drawn = True
    if not drawn:
        return None
    limit = ax.get_xlim()[1]
    ax.plot([0, limit], [0, limit], ":", color="grey", label="achieved = target")
    ax.set_xlabel("target rate (requests/s)")
    ax.set_ylabel("achieved (requests/s)")
    subject = ", ".join(describe(d) for d in documents)
    png = _finish(ax, "Open loop: achieved vs target rate", subject)
    return Plot(
        "rates", "Open loop: achieved vs target rate", f"achieved vs target: {subject}", png
    )


def loadtest_plots(documents: Sequence[Document]) -> list[Plot]:
    if not documents:
        return []
    return [p for p in (_curve(documents), _rates(documents)) if p is not None]
