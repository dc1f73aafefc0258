"""report: one self-contained HTML page from bench result files (rendering only).

``write_report`` reads ``inferpack bench`` JSON documents (schema ``inferpack.bench/1``)
and writes tables plus charts, the charts as PNG data URIs, with inline CSS only: the
page opens offline and can be attached or archived as one file. matplotlib (the
``report`` extra) is imported only when the charts are drawn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inferpack.errors import InvalidInputError
from inferpack.report.html import render_page
from inferpack.report.loadtest import SCHEMA as LOADTEST_SCHEMA
from inferpack.report.loadtest import describe as describe_loadtest
from inferpack.report.loadtest import is_loadtest, loadtest_plots, loadtest_section
from inferpack.report.plots import build_plots

SCHEMA = "inferpack.bench/1"
SCHEMAS = (SCHEMA, LOADTEST_SCHEMA)

__all__ = ["SCHEMA", "SCHEMAS", "load_result", "render_report", "write_report"]


def load_result(path: Path) -> dict[str, Any]:
    """One bench result document; InvalidInputError if unreadable or not a bench result."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidInputError(f"{path}: cannot read: {error.strerror or error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise InvalidInputError(f"{path}: not a result document (a JSON object expected)")
    schema = document.get("schema")
    if schema is not None and schema not in SCHEMAS:
        raise InvalidInputError(f"{path}: schema {schema!r} is not supported (expected {SCHEMAS})")
    rows = "levels" if schema == LOADTEST_SCHEMA else "results"
    if not isinstance(document.get(rows), list):
        raise InvalidInputError(f"{path}: not a {schema or SCHEMA} document (no {rows!r} list)")
    return document


def render_report(documents: Sequence[Mapping[str, Any]]) -> str:
    """The report page for already-loaded result documents, as an HTML string."""
    bench = [d for d in documents if not is_loadtest(d)]
    loads = [d for d in documents if is_loadtest(d)]
    plots = [*build_plots(bench), *loadtest_plots(loads)] if bench else loadtest_plots(loads)
    sections = [loadtest_section(i, d) for i, d in enumerate(loads)]
    subjects = [describe_loadtest(d) for d in loads]
    return render_page(bench, plots, sections, subjects)


def write_report(result_paths: Sequence[Path], output: Path) -> Path:
    """Read every result file, write the report page to ``output``; return ``output``."""
    if not result_paths:
        raise InvalidInputError("no bench result files given")
    documents = [load_result(Path(path)) for path in result_paths]
    page = render_report(documents)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output
