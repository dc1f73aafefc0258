"""Charts for load-test documents, shared by all of them on one page.

* The throughput-latency curve: p50 (solid) and p99 (dashed) latency against achieved
  throughput, one colour per document, its levels joined in load order (a saturated
  server can lose throughput as load grows, so the curve may bend back), each point
  labelled with its concurrency or target rate; unstable levels are hollow markers.
* For open-loop documents: achieved against target rate, with the ``achieved = target``
  diagonal; levels where more than 1 % of sends were late are labelled.

A document keeps its colour in both charts. matplotlib is imported only when drawing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from inferpack.report.loadtest import describe, level_label, levels_of
from inferpack.report.plots import Document, Plot, Result, field, finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# (latency key, line style, marker); the first one drawn carries the level labels
CURVE_LINES = (("p99", "--", "s"), ("p50", "-", "o"))
# Latencies spanning more than this ratio go on a log scale (saturation dwarfs the rest).
LOG_SCALE_RATIO = 30.0
LATE_LABEL_FRACTION = 0.01

__all__ = ["loadtest_plots"]


def _load(level: Result) -> float:
    """Where a level sits in the sweep: its concurrency or target rate."""
    value = field(level, "concurrency")
    value = field(level, "rate_rps") if value is None else value
    return math.inf if value is None else value


def _names(documents: Sequence[Document]) -> list[str]:
    """Legend names, one per document; repeated descriptions get a ``#n`` suffix."""
    names = [describe(document) for document in documents]
    return [f"{name} #{names[:i].count(name) + 1}" if names.count(name) > 1 else name
            for i, name in enumerate(names)]  # fmt: skip


def _label(ax: Axes, x: float, y: float, text: str | None) -> None:
    if text:
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)


def _curve(documents: Sequence[Document], subject: str) -> Plot | None:
    ax: Axes | None = None
    drawn: list[float] = []
    styles: dict[str, tuple[str, str]] = {}
    hollow = False
    for index, (document, name) in enumerate(zip(documents, _names(documents), strict=True)):
        color = f"C{index % 10}"
        levels = sorted(levels_of(document), key=_load)
        labelled = named = False
        for key, style, marker in CURVE_LINES:
            points = [
                (x, y, level)
                for level in levels
                if (x := field(level, "throughput_rps")) is not None
                and (y := field(level, "latency_ms", key)) is not None
            ]
            if not points:
                continue
            ax = ax or new_axes()
            if not named:  # the legend names the document by its colour alone
                ax.plot([], [], color=color, label=name)
                named = True
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, linestyle=style, marker=marker, color=color)
            styles[key] = (style, marker)
            drawn.extend(ys)
            unstable = [(x, y) for x, y, level in points if level.get("stable") is False]
            if unstable:
                hollow = True
                ux, uy = [p[0] for p in unstable], [p[1] for p in unstable]
                ax.scatter(ux, uy, marker=marker, facecolors="white", edgecolors=color, zorder=3)
            if not labelled:
                labelled = True
                for x, y, level in points:
                    _label(ax, x, y, level_label(level))
    if ax is None:
        return None
    for key, (style, marker) in sorted(styles.items()):
        ax.plot([], [], color="black", linestyle=style, marker=marker, label=key)
    if hollow:
        label = "unstable level"
        ax.scatter([], [], marker="o", facecolors="white", edgecolors="black", label=label)
    ax.margins(0.06, 0.12)  # room for the level labels at the edges
    low, high = min(drawn), max(drawn)
    if low > 0 and high / low > LOG_SCALE_RATIO:
        from matplotlib.ticker import LogFormatter

        ax.set_yscale("log")  # plain numbers on the ticks (minor ones too when they fit)
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.set_ylabel("latency (ms, log scale)")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("latency (ms)")
    ax.set_xlim(left=0)
    ax.set_xlabel("achieved throughput (requests/s)")
    title = "Throughput-latency curve (labels: concurrency or target rate)"
    alt = (
        "Line chart of p50 (solid) and p99 (dashed) request latency in ms against achieved "
        f"throughput in requests per second, points labelled by concurrency or rate, for {subject}"
    )
    return Plot("curve", title, alt, finish(ax, "Throughput-latency curve", subject))


def _rates(documents: Sequence[Document]) -> Plot | None:
    ax: Axes | None = None
    top = 0.0
    subjects = []
    for index, (document, name) in enumerate(zip(documents, _names(documents), strict=True)):
        points = [
            (target, achieved, level)
            for level in levels_of(document)
            if (target := field(level, "rate_rps")) is not None
            and (achieved := field(level, "throughput_rps")) is not None
        ]
        if not points:
            continue
        points.sort(key=lambda p: p[0])
        ax = ax or new_axes()
        subjects.append(describe(document))
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o", color=f"C{index % 10}", label=name)
        top = max(top, *xs, *ys)
        for x, y, level in points:
            late = field(level, "late_fraction")
            if late is not None and late > LATE_LABEL_FRACTION:
                _label(ax, x, y, f"{late:.0%} late")
    if ax is None:
        return None
    top = top * 1.05 or 1.0
    ax.plot([0, top], [0, top], linestyle=":", color="grey", label="achieved = target")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("target rate (requests/s)")
    ax.set_ylabel("achieved throughput (requests/s)")
    subject = ", ".join(dict.fromkeys(subjects))
    title = "Open loop: achieved vs target rate"
    alt = (
        "Line chart of achieved throughput against the target request rate, with the "
        f"achieved = target diagonal, for {subject}"
    )
    return Plot("rates", title, alt, finish(ax, title, subject))


def loadtest_plots(documents: Sequence[Document]) -> list[Plot]:
    """The load-test charts the documents have data for, in page order."""
    subject = ", ".join(dict.fromkeys(describe(d) for d in documents))
    plots = [_curve(documents, subject), _rates(documents)]
    return [plot for plot in plots if plot is not None]
