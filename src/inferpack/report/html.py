"""The report page: one self-contained HTML document (inline CSS, PNGs as data URIs).

The bench sections live here, with the table and formatting helpers that the load-test
sections (``loadtest.py``) share. Every piece of text from a result file goes through
``html.escape``; nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import struct
from collections.abc import Callable, Mapping, Sequence

from inferpack import __version__
from inferpack.report.plots import Document, Plot, Result, describe, field, number, results_of

MISSING = "\u2013"  # en dash
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d2330; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
.meta { color: #4a5263; margin: 0.2rem 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 13px; }
th, td { border: 1px solid #d5d9e2; padding: 0.2rem 0.45rem; white-space: nowrap; }
th { background: #eef1f6; text-align: left; vertical-align: bottom; }
thead th { white-space: normal; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.noisy td, tr.unstable td { background: #fff3cd; }
ul.warnings li { margin: 0.15rem 0; }
ul.warnings li.noisy, ul.warnings li.unstable {
  background: #fff3cd; border-left: 4px solid #e0a800; padding-left: 0.4rem; }
figure { margin: 1.2rem 0; } figcaption { color: #4a5263; }
img { max-width: 100%; height: auto; border: 1px solid #e3e6ec; }
footer { margin-top: 2.5rem; color: #6b7385; font-size: 12px; }
"""

Getter = Callable[[Result], str | None]
# (header, cell text or None when missing, dropped when every row is missing)
Column = tuple[str, Getter, bool]


def sig3(value: float | None) -> str | None:
    """Three significant digits; whole numbers with thousands separators from 100 up."""
    if value is None:
        return None
    if abs(value) >= 99.95:
        return f"{value:,.0f}"
    return f"{value:#.3g}"


def thousands(value: float | None) -> str | None:
    if value is None:
        return None
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def fmt(template: str, scale: float = 1.0) -> Callable[[float | None], str | None]:
    return lambda value: None if value is None else template.format(value * scale)


integer = fmt("{:,.0f}")
percent = fmt("{:.1f}")
fraction_percent = fmt("{:.1f} %", 100.0)
six_places = fmt("{:.6f}")


def num(formatter: Callable[[float | None], str | None], *path: str) -> Getter:
    """A column getter: the number at ``path`` in a row, through ``formatter``."""
    return lambda result: formatter(field(result, *path))


def _noisy(result: Result) -> str | None:
    noisy = result.get("noisy")
    return None if noisy is None else ("yes" if noisy else "no")


RESULT_COLUMNS: list[Column] = [
    ("precision", lambda r: str(r.get("precision") or MISSING), False),
    ("compile batch", num(integer, "compiled_bucket"), True),
    ("batch", num(integer, "batch_size"), False),
    ("instances", num(integer, "instances"), False),
    ("items/s", num(thousands, "items_per_s"), False),
    ("p50 ms", num(sig3, "latency_ms", "p50"), False),
    ("p90 ms", num(sig3, "latency_ms", "p90"), False),
    ("p95 ms", num(sig3, "latency_ms", "p95"), False),
    ("p99 ms", num(sig3, "latency_ms", "p99"), False),
    ("spread %", num(percent, "throughput_spread_pct"), False),
    ("noisy", _noisy, False),
    ("CPU %", num(percent, "utilisation", "cpu_percent_mean"), True),
    ("GPU %", num(percent, "utilisation", "gpu_percent_mean"), True),
    ("peak mem MB", num(thousands, "peak_device_memory_mb"), True),
    ("max abs err", num(sig3, "accuracy", "max_abs_error"), True),
    ("rel L2", num(sig3, "accuracy", "relative_l2"), True),
    ("cosine", num(six_places, "accuracy", "cosine_similarity"), True),
    ("top-1 agree", num(fraction_percent, "accuracy", "top1_agreement"), True),
    ("top-5 agree", num(fraction_percent, "accuracy", "top5_agreement"), True),
    ("keypoint agree", num(fraction_percent, "accuracy", "keypoint_agreement"), True),
    ("USD / 1M", num(sig3, "cost", "usd_per_million"), True),
    ("inf / 0.0001 USD", num(thousands, "cost", "inferences_per_0_0001_usd"), True),
]
SUMMARY_COLUMNS: list[Column] = [*RESULT_COLUMNS[:7], *RESULT_COLUMNS[-2:]]
CONDITIONS = (
    ("condition_a", "A: best at batch 1"),
    ("condition_b", "B: best throughput"),
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


TEXT_HEADERS = frozenset({"precision", "noisy", "stable", "errors"})  # left-aligned columns


def _noisy_row(row: Result) -> str | None:
    return "noisy" if row.get("noisy") is True else None


def _cell(text: str | None, header: str) -> str:
    css = "" if header in TEXT_HEADERS else ' class="num"'
    return f"<td{css}>{_e(MISSING if text is None else text)}</td>"


def table(
    columns: Sequence[Column],
    rows: Sequence[Result],
    css: str,
    labels: Sequence[str] = (),
    row_class: Callable[[Result], str | None] = _noisy_row,
) -> str:
    """A table of ``rows`` (row headers ``labels`` when given); optional columns that are
    empty in every row are left out; ``row_class`` names a row's CSS class (highlight)."""
    kept = [c for c in columns if not c[2] or any(c[1](r) is not None for r in rows)]
    lead = "<th></th>" if labels else ""
    head = lead + "".join(f"<th>{_e(c[0])}</th>" for c in kept)
    body = []
    for index, row in enumerate(rows):
        css_class = row_class(row)
        marked = f' class="{_e(css_class)}"' if css_class else ""
        first = f'<th scope="row">{_e(labels[index])}</th>' if labels else ""
        cells = "".join(_cell(getter(row), header) for header, getter, _ in kept)
        body.append(f"<tr{marked}>{first}{cells}</tr>")
    return (
        f'<div class="table-wrap"><table class="{css}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _summary(document: Document) -> str:
    summary = document.get("summary")
    summary = summary if isinstance(summary, Mapping) else {}
    rows = [summary.get(key) for key, _ in CONDITIONS]
    found: list[Result] = [row if isinstance(row, Mapping) else {} for row in rows]
    return table(SUMMARY_COLUMNS, found, "summary", [label for _, label in CONDITIONS])


def _environment(document: Document) -> str:
    env = document.get("environment")
    env = env if isinstance(env, Mapping) else {}
    gpu = env.get("gpu")
    parts = [f"CPU: {env.get('cpu') or MISSING} ({env.get('cores') or MISSING} cores)"]
    if isinstance(gpu, Mapping):
        memory = thousands(number(gpu.get("memory_mb"))) or MISSING
        driver = gpu.get("driver") or MISSING
        parts.append(f"GPU: {gpu.get('name') or MISSING} (driver {driver}, {memory} MB)")
    else:
        parts.append("GPU: none")
    for label, key in (("torch", "torch"), ("Python", "python"), ("inferpack", "inferpack")):
        parts.append(f"{label} {env.get(key) or MISSING}")
    parts.append(f"git {env.get('git_sha') or MISSING}")
    if env.get("platform"):
        parts.append(str(env["platform"]))
    return f'<p class="meta environment">{_e(" · ".join(parts))}</p>'


def _spec(document: Document) -> str:
    spec = document.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    parts = [f"source: {spec.get('source') or MISSING}"]
    for key in ("precisions", "batch_sizes", "instances"):
        values = spec.get(key)
        if isinstance(values, list):
            parts.append(f"{key.replace('_', ' ')}: {', '.join(str(v) for v in values)}")
    window = number(spec.get("duration_s"))
    if window is not None:
        warmup = number(spec.get("warmup_s")) or 0.0
        repeats = spec.get("repeats") or 1
        parts.append(f"{repeats} x {window:g} s windows after {warmup:g} s warm-up")
    if spec.get("instance_type"):
        region = spec.get("region") or "any region"
        parts.append(f"instance type: {spec['instance_type']} ({region})")
    price = number(spec.get("price_usd_per_hour"))
    if price is not None:
        parts.append(f"price: {price:g} USD/h")
    return f'<p class="meta spec">{_e(" · ".join(parts))}</p>'


def _warnings(document: Document) -> str:
    warnings = [str(w) for w in document.get("warnings") or []]
    if not warnings:
        return ""
    items = []
    for warning in warnings:
        css = ' class="noisy"' if warning.lower().startswith("noisy") else ""
        items.append(f"<li{css}>{_e(warning)}</li>")
    return f'<h3>Warnings</h3><ul class="warnings">{"".join(items)}</ul>'


def _compiled_cell(batch: str) -> Getter:
    """Throughput and p90 of the result at inference batch ``batch`` in a compile-batch row."""

    def cell(row: Result) -> str | None:
        result = row.get(batch)
        if not isinstance(result, Mapping):
            return None
        items = thousands(field(result, "items_per_s")) or MISSING
        return f"{items} items/s · p90 {sig3(field(result, 'latency_ms', 'p90')) or MISSING} ms"

    return cell


def _compiled_groups(document: Document) -> dict[str, dict[float, dict[str, Result]]]:
    """Results with a ``compiled_bucket``: per "precision, N instances", per compile batch,
    per inference batch (as text)."""
    groups: dict[str, dict[float, dict[str, Result]]] = {}
    for result in results_of(document):
        bucket, batch = field(result, "compiled_bucket"), field(result, "batch_size")
        if bucket is None or batch is None:
            continue
        label = f"{result.get('precision') or MISSING}, {result.get('instances')} instance(s)"
        groups.setdefault(label, {}).setdefault(bucket, {})[f"{batch:g}"] = result
    return groups


def _compile_mode(document: Document) -> str:
    spec = document.get("spec")
    mode = spec.get("compile_mode") if isinstance(spec, Mapping) else None
    return str(mode or MISSING)


def _compiled(document: Document) -> str:
    """The seeds' compile batch x inference batch tables (rows: the batch the model was
    compiled for; columns: the batch measured, run as padded calls of the compile batch);
    empty for a document measured without ``--compiled-bucket``."""
    groups = _compiled_groups(document)
    if not groups:
        return ""
    parts = [
        "<h3>Compile batch &times; inference batch</h3>",
        f'<p class="meta">compile mode {_e(_compile_mode(document))}; cells: throughput and '
        "p90 latency of one inference batch</p>",
    ]
    for label, by_bucket in groups.items():
        batches = sorted({b for cells in by_bucket.values() for b in cells}, key=float)
        columns = [(f"batch {b}", _compiled_cell(b), False) for b in batches]
        buckets = sorted(by_bucket)
        rows, labels = [by_bucket[c] for c in buckets], [f"compile {c:g}" for c in buckets]
        parts.append(f'<p class="meta">{_e(label)}</p>')
        parts.append(table(columns, rows, "compiled", labels, row_class=lambda _: None))
    return "\n".join(parts)


def bench_section(index: int, document: Document) -> str:
    """The section of one bench document: environment, spec, warnings, summary, results."""
    rows = results_of(document)
    return "\n".join(
        [
            f'<section class="document" id="document-{index}">',
            f"<h2>{_e(describe(document))}</h2>",
            _environment(document),
            _spec(document),
            _warnings(document),
            "<h3>Summary</h3>",
            _summary(document),
            _compiled(document),
            f"<h3>All results ({len(rows)})</h3>",
            table(RESULT_COLUMNS, rows, "results"),
            "</section>",
        ]
    )


def _png_size(png: bytes) -> tuple[int, int] | None:
    if not png.startswith(PNG_SIGNATURE) or len(png) < 24:
        return None
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    size = _png_size(plot.png)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return (
        f'<figure id="plot-{_e(plot.key)}">'
        f'<img src="data:image/png;base64,{data}" alt="{_e(plot.alt)}"{dims}>'
        f"<figcaption>{_e(plot.title)}</figcaption></figure>"
    )


def _plots(plots: Sequence[Plot]) -> str:
    figures = [_figure(p) for p in plots] or ["<p>No results to plot.</p>"]
    return '<section class="plots">\n<h2>Plots</h2>\n' + "\n".join(figures) + "\n</section>"


def render_page(sections: Sequence[str], subjects: Sequence[str], plots: Sequence[Plot]) -> str:
    """The page: one rendered section per result document (the title lists ``subjects``),
    then the plots."""
    named = ", ".join(dict.fromkeys(subjects)) or "no results"
    count = len(sections)
    body = [
        f"<h1>inferpack report: {_e(named)}</h1>",
        *sections,
        _plots(plots),
        f"<footer>Rendered by inferpack {_e(__version__)} from {count} result "
        f"document{'s' if count != 1 else ''}.</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>inferpack report: {_e(named)}</title>\n<style>{CSS}</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
