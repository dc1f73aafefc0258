"""The report's charts, one matplotlib figure per chart, returned as PNG bytes.

matplotlib is an optional extra (``inferpack[report]``) and is imported only when a chart
is drawn. Figures use the object API with the Agg canvas: no pyplot, no global state.
Several documents share each chart; their series are told apart by model and device.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from inferpack.errors import MissingExtraError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Document = Mapping[str, Any]
D = TypeVar("D")
Result = Mapping[str, Any]
Keys = tuple[str, ...]  # keys down into a result: ("latency_ms", "p90")
BATCH: Keys = ("batch_size",)

DPI = 100
WIDTH_IN, HEIGHT_IN = 9.0, 4.8
# Above this many series the legend moves beside the axes instead of over the data.
LEGEND_INSIDE_MAX = 6


@dataclass(frozen=True, slots=True)
class Plot:
    key: str  # "throughput", "latency", "cost", "utilisation", "profile", "curve", "rates"
    title: str
    alt: str
    png: bytes


@dataclass(frozen=True, slots=True)
class _Series:
    label: str
    results: list[Result]  # sorted by batch size


def number(value: object) -> float | None:
    """A finite int or float as float; anything else (None, bool, str, NaN) as None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def field(result: Mapping[str, Any], *path: str) -> float | None:
    """The number at ``result[path[0]][path[1]]...``, None where anything is missing."""
    value: object = result
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return number(value)


def describe(document: Document) -> str:
    spec = document.get("spec") or {}
    return f"{spec.get('model') or 'unknown model'} on {spec.get('device') or 'unknown device'}"


def results_of(document: Document) -> list[Result]:
    return [r for r in document.get("results") or [] if isinstance(r, Mapping)]


def _instances(count: object) -> str:
    return f"{count} instance{'' if count == 1 else 's'}"


def _series(documents: Sequence[Document]) -> list[_Series]:
    """One series per document x precision x instance count x compile batch (results of
    ``--compiled-bucket``: one line per compile batch C), in first-seen order."""
    series: list[_Series] = []
    for document in documents:
        results = results_of(document)
        several_counts = len({r.get("instances") for r in results}) > 1
        groups: dict[tuple[str, object, float | None], list[Result]] = {}
        for result in results:
            bucket = field(result, "compiled_bucket")
            key = (str(result.get("precision") or "?"), result.get("instances"), bucket)
            groups.setdefault(key, []).append(result)
        for (precision, instances, bucket), rows in groups.items():
            parts = [describe(document)] if len(documents) > 1 else []
            parts.append(precision)
            if several_counts:
                parts.append(_instances(instances))
            if bucket is not None:
                parts.append(f"compile batch {bucket:g}")
            rows.sort(key=lambda r: field(r, "batch_size") or 0.0)
            series.append(_Series(", ".join(parts), rows))
    return series


def _pairs(results: Iterable[Result], x: Keys, y: Keys) -> list[tuple[float, float, Result]]:
    """(x, y, result) for every result that has both numbers."""
    found = [(field(r, *x), field(r, *y), r) for r in results]
    return [(a, b, r) for a, b, r in found if a is not None and b is not None]


def per_document(
    documents: Sequence[D], charts: Sequence[tuple[str, Callable[[D, str], Plot | None]]]
) -> list[Plot]:
    """Each chart of each document, document by document; a chart's key is its name for
    the first document, ``name-2`` for the second, ... A chart returning None is left out."""
    plots = []
    for index, document in enumerate(documents):
        suffix = "" if index == 0 else f"-{index + 1}"
        for name, draw in charts:
            plot = draw(document, f"{name}{suffix}")
            if plot is not None:
                plots.append(plot)
    return plots


def new_axes(height_in: float = HEIGHT_IN) -> Axes:
    """One empty chart (its own Figure on an Agg canvas); MissingExtraError without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MissingExtraError("matplotlib", "report") from error
    figure = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure.add_subplot()


def finish(ax: Axes, title: str, subject: str) -> bytes:
    """Title, legend and grid on ``ax``; its figure as PNG bytes."""
    ax.figure.suptitle(textwrap.fill(f"{title}: {subject}", 90), fontsize="medium")
    handles, _ = ax.get_legend_handles_labels()
    if len(handles) > LEGEND_INSIDE_MAX:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif handles:
        ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    ax.figure.canvas.print_figure(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _batch_axis(ax: Axes, batches: Iterable[float]) -> None:
    ticks = sorted(set(batches))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("batch size (items per batch, log2 scale)")


def _line_chart(series: list[_Series], lines: Sequence[tuple[Keys, str, str]]) -> Axes | None:
    """Per series and per (path, name, linestyle): one line against batch size. The legend
    names each series once (its colour) and each line style once (black)."""
    drawn: list[float] = []
    styles: dict[str, str] = {}
    ax: Axes | None = None
    for index, one in enumerate(series):
        label = one.label
        for path, name, style in lines:
            pairs = [(x, y) for x, y, _ in _pairs(one.results, BATCH, path) if x > 0]
            if not pairs:
                continue
            ax = ax or new_axes()
            xs, ys = zip(*pairs, strict=True)
            ax.plot(xs, ys, marker="o", linestyle=style, color=f"C{index % 10}", label=label)
            label, styles[name] = "_nolegend_", style
            drawn.extend(xs)
    if ax is None:
        return None
    if len(lines) > 1:
        for name, style in styles.items():
            ax.plot([], [], color="black", linestyle=style, label=name)
    _batch_axis(ax, drawn)
    return ax


def _throughput(series: list[_Series], subject: str) -> Plot | None:
    ax = _line_chart(series, [(("items_per_s",), "", "-")])
    if ax is None:
        return None
    ax.set_ylabel("throughput (items/s)")
    ax.set_ylim(bottom=0)
    title = "Throughput vs batch size"
    alt = f"Line chart of throughput in items per second against batch size for {subject}"
    return Plot("throughput", title, alt, finish(ax, title, subject))


def _latency(series: list[_Series], subject: str) -> Plot | None:
    paths = [(("latency_ms", "p50"), "p50", "-"), (("latency_ms", "p90"), "p90", "--")]
    ax = _line_chart(series, paths)
    if ax is None:
        return None
    ax.set_ylabel("batch latency (ms)")
    ax.set_ylim(bottom=0)
    title = "Latency p50 and p90 vs batch size"
    alt = f"Line chart of p50 (solid) and p90 (dashed) batch latency in ms for {subject}"
    return Plot("latency", title, alt, finish(ax, title, subject))


def _utilisation(series: list[_Series], subject: str) -> Plot | None:
    paths = [
        (("utilisation", "cpu_percent_mean"), "CPU", "-"),
        (("utilisation", "gpu_percent_mean"), "GPU", "--"),
    ]
    ax = _line_chart(series, paths)
    if ax is None:
        return None
    ax.set_ylabel("mean utilisation (%)")
    ax.set_ylim(0, max(105.0, ax.get_ylim()[1]))
    title = "Utilisation vs batch size"
    alt = f"Line chart of mean CPU (solid) and GPU (dashed) utilisation in percent for {subject}"
    return Plot("utilisation", title, alt, finish(ax, title, subject))


def _cost(series: list[_Series], subject: str) -> Plot | None:
    ax: Axes | None = None
    for index, one in enumerate(series):
        points = _pairs(one.results, ("latency_ms", "p90"), ("cost", "usd_per_million"))
        if not points:
            continue
        ax = ax or new_axes()
        xs, ys, _ = zip(*points, strict=True)
        ax.scatter(xs, ys, color=f"C{index % 10}", label=one.label)
        for x, y, row in points:
            text = f"b{row.get('batch_size')}"
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if ax is None:
        return None
    ax.set_xlabel("p90 batch latency (ms)")
    ax.set_ylabel("cost (USD per 1M inferences)")
    title = "Cost vs p90 latency (labels: batch size)"
    alt = f"Scatter of USD per million inferences against p90 latency in ms for {subject}"
    return Plot("cost", title, alt, finish(ax, title, subject))


def _stage_times(result: Result) -> dict[str, float]:
    profile = result.get("profile")
    stages = profile.get("stages_ms") if isinstance(profile, Mapping) else None
    if not isinstance(stages, Mapping):
        return {}
    times = {str(stage): number(ms) for stage, ms in stages.items()}
    return {stage: ms for stage, ms in times.items() if ms is not None}


def _profile(series: list[_Series], subject: str) -> Plot | None:
    """Stacked horizontal bars: one bar per profiled configuration, one segment per stage."""
    profiled = [
        (f"{one.label}, batch {result.get('batch_size')}", times)
        for one in series
        for result in one.results
        if (times := _stage_times(result))
    ]
    if not profiled:
        return None
    stages = list(dict.fromkeys(stage for _, times in profiled for stage in times))
    ax = new_axes(height_in=max(2.5, 1.6 + 0.4 * len(profiled)))
    rows = list(range(len(profiled)))
    left = [0.0] * len(profiled)
    for index, stage in enumerate(stages):
        widths = [times.get(stage, 0.0) for _, times in profiled]
        hatch = "//" if index >= 10 else None
        color = f"C{index % 10}"
        ax.barh(rows, widths, left=left, color=color, hatch=hatch, label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(rows, labels=[label for label, _ in profiled])
    ax.invert_yaxis()
    ax.set_xlabel("time per stage (ms, mean per call)")
    title = "Time per model stage"
    alt = f"Stacked horizontal bars of milliseconds per model stage for {subject}"
    return Plot("profile", title, alt, finish(ax, title, subject))


def build_plots(documents: Sequence[Document]) -> list[Plot]:
    """Every chart the documents have data for, in page order."""
    subject = ", ".join(dict.fromkeys(describe(d) for d in documents))
    series = _series(documents)
    plots = [
        _throughput(series, subject),
        _latency(series, subject),
        _cost(series, subject),
        _utilisation(series, subject),
        _profile(series, subject),
    ]
    return [plot for plot in plots if plot is not None]
