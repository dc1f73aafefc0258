"""Load-test sections of the report: ``inferpack loadtest`` documents (``inferpack.loadtest/1``).

One section per document: what was run (spec line, method, load generator), the warnings
(unstable levels highlighted) and a table with one row per concurrency or target rate.
The charts these documents share are in ``loadtest_plots.py``. Rendering only; missing
fields and nulls show as a dash, and every text from a document is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from inferpack.report.html import (
    MISSING,
    Column,
    fmt,
    integer,
    num,
    sig3,
    table,
    thousands,
)
from inferpack.report.plots import Document, Result, field, number

SCHEMA = "inferpack.loadtest/1"
MODELS_SHOWN = 5  # the spec line names this many models, then counts the rest

__all__ = ["SCHEMA", "describe", "is_loadtest", "level_label", "levels_of", "loadtest_section"]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object, default: str = MISSING) -> str:
    return default if value is None or value == "" else str(value)


def _seconds(value: object) -> str:
    seconds = number(value)
    return MISSING if seconds is None else f"{seconds:g} s"


def is_loadtest(document: Document) -> bool:
    return document.get("schema") == SCHEMA


def levels_of(document: Document) -> list[Result]:
    levels = document.get("levels")
    return [lv for lv in levels if isinstance(lv, Mapping)] if isinstance(levels, list) else []


def _models(spec: Mapping[str, Any]) -> list[str]:
    models = spec.get("models")
    return [str(model) for model in models] if isinstance(models, list) else []


def describe(document: Document) -> str:
    """A short name: ``loadtest tiny-mlp over http-binary, closed loop``."""
    spec = _mapping(document.get("spec"))
    models = _models(spec)
    shown = models[0] if len(models) == 1 else f"{len(models)} models"
    name = f"loadtest {shown} over {_text(spec.get('transport'), 'unknown transport')}"
    mode = spec.get("mode")
    return f"{name}, {mode} loop" if mode else name


def level_label(level: Result) -> str | None:
    """``c=8`` for a closed-loop level, ``50/s`` for an open-loop one."""
    concurrency = field(level, "concurrency")
    if concurrency is not None:
        return f"c={concurrency:g}"
    rate = field(level, "rate_rps")
    return None if rate is None else f"{rate:g}/s"


def _stable(level: Result) -> str | None:
    stable = level.get("stable")
    return None if not isinstance(stable, bool) else ("yes" if stable else "no")


def _windows(level: Result) -> str | None:
    windows = level.get("windows")
    return str(len(windows)) if isinstance(windows, list) else None


def _errors(level: Result) -> str | None:
    errors = level.get("errors")
    if not isinstance(errors, Mapping):
        return None
    found = [(str(code), count) for code, count in errors.items() if number(count)]
    return ", ".join(f"{code}: {count}" for code, count in found) or "none"


def _unstable_row(level: Result) -> str | None:
    return "unstable" if level.get("stable") is False else None


LEVEL_COLUMNS: list[Column] = [
    ("concurrency", num(integer, "concurrency"), True),
    ("target req/s", num(fmt("{:,g}"), "rate_rps"), True),
    ("stable", _stable, False),
    ("windows", _windows, True),
    ("requests", num(integer, "requests"), False),
    ("req/s", num(thousands, "throughput_rps"), False),
    ("items/s", num(thousands, "items_per_s"), False),
    ("p50 ms", num(sig3, "latency_ms", "p50"), False),
    ("p90 ms", num(sig3, "latency_ms", "p90"), False),
    ("p95 ms", num(sig3, "latency_ms", "p95"), False),
    ("p99 ms", num(sig3, "latency_ms", "p99"), False),
    ("max ms", num(sig3, "latency_ms", "max"), False),
    ("errors", _errors, False),
    ("lateness p99 ms", num(sig3, "send_lateness_ms", "p99"), True),
    ("late %", num(fmt("{:.1f}", 100.0), "late_fraction"), True),
]


def _spec_line(spec: Mapping[str, Any]) -> str:
    models = _models(spec)
    named = ", ".join(models[:MODELS_SHOWN])
    if len(models) > MODELS_SHOWN:
        named += f" (+{len(models) - MODELS_SHOWN} more)"
    levels = spec.get("levels")
    parts = [
        f"url: {_text(spec.get('url'))}",
        f"transport: {_text(spec.get('transport'))}",
        f"mode: {_text(spec.get('mode'))} loop",
        f"distribution: {_text(spec.get('distribution'))}",
        f"models ({len(models)}): {named or MISSING}",
        f"batch size: {_text(spec.get('batch_size'))}",
        f"workers: {_text(spec.get('workers'))}",
    ]
    if isinstance(levels, list):
        parts.append(f"levels: {', '.join(str(level) for level in levels)}")
    parts.append(
        f"{_seconds(spec.get('duration_s'))} per level in windows of "
        f"{_seconds(spec.get('window_s'))} (at most {_text(spec.get('max_windows'))}) "
        f"after {_seconds(spec.get('warmup_s'))} warm-up"
    )
    if spec.get("seed") is not None:
        parts.append(f"seed {spec['seed']}")
    return f'<p class="meta spec">{_e(" · ".join(parts))}</p>'


def _environment(document: Document) -> str:
    env = _mapping(document.get("environment"))
    parts = [
        f"load generator: CPU {_text(env.get('cpu'))} ({_text(env.get('cores'))} cores)",
        f"Python {_text(env.get('python'))}",
        f"inferpack {_text(env.get('inferpack'))}",
        f"git {_text(env.get('git_sha'))}",
    ]
    if env.get("platform"):
        parts.append(str(env["platform"]))
    return f'<p class="meta environment">{_e(" · ".join(parts))}</p>'


def _warnings(document: Document) -> str:
    warnings = document.get("warnings")
    if not isinstance(warnings, list) or not warnings:
        return ""
    items = []
    for warning in map(str, warnings):
        unstable = "not stable" in warning.lower() or "unstable" in warning.lower()
        css = ' class="unstable"' if unstable else ""
        items.append(f"<li{css}>{_e(warning)}</li>")
    return f'<h3>Warnings</h3><ul class="warnings">{"".join(items)}</ul>'


def loadtest_section(index: int, document: Document) -> str:
    """The section of one load-test document: spec, method, warnings, levels table."""
    levels = levels_of(document)
    method = document.get("method")
    unstable = sum(level.get("stable") is False for level in levels)
    note = f"; {unstable} unstable, highlighted" if unstable else ""
    return "\n".join(
        [
            f'<section class="document loadtest" id="loadtest-{index}">',
            f"<h2>{_e(describe(document))}</h2>",
            _environment(document),
            _spec_line(_mapping(document.get("spec"))),
            f'<p class="meta method">Method: {_e(method)}</p>' if method else "",
            _warnings(document),
            f"<h3>Levels ({len(levels)}{note})</h3>",
            table(LEVEL_COLUMNS, levels, "levels", row_class=_unstable_row),
            "</section>",
        ]
    )
