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
from inferpack.report.plots import build_plots

SCHEMA = "inferpack.bench/1"

__all__ = ["SCHEMA", "load_result", "render_report", "write_report"]


def load_result(path: Path) -> dict[str, Any]:
    """One bench result document; InvalidInputError if unreadable or not a bench result."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidInputError(f"{path}: cannot read: {error.strerror or error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise InvalidInputError(f"{path}: not a bench result (no 'results' list)")
    schema = document.get("schema")
    if schema is not None and schema != SCHEMA:
        raise InvalidInputError(f"{path}: schema {schema!r} is not supported (expected {SCHEMA})")
    return document


def render_report(documents: Sequence[Mapping[str, Any]]) -> str:
    """The report page for already-loaded result documents, as an HTML string."""
    return render_page(documents, build_plots(documents))


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
