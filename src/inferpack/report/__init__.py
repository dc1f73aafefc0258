"""report: one self-contained HTML page from result files (rendering only).

``write_report`` reads ``inferpack bench`` documents (schema ``inferpack.bench/1``) and
``inferpack loadtest`` documents (schema ``inferpack.loadtest/1``), in any mix, and writes
one section per document (in the order given) plus charts, the charts as PNG data URIs,
with inline CSS only: the page opens offline and can be attached or archived as one file.
matplotlib (the ``report`` extra) is imported only when the charts are drawn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inferpack.errors import InvalidInputError
from inferpack.report.html import bench_section, render_page
from inferpack.report.loadtest import SCHEMA as LOADTEST_SCHEMA
from inferpack.report.loadtest import describe as describe_loadtest
from inferpack.report.loadtest import is_loadtest, loadtest_section
from inferpack.report.loadtest_plots import loadtest_plots
from inferpack.report.plots import build_plots, describe

SCHEMA = "inferpack.bench/1"
SCHEMAS = (SCHEMA, LOADTEST_SCHEMA)
# The list of rows each schema must carry.
ROWS = {SCHEMA: "results", LOADTEST_SCHEMA: "levels"}

__all__ = ["LOADTEST_SCHEMA", "SCHEMA", "SCHEMAS", "load_result", "render_report", "write_report"]


def load_result(path: Path) -> dict[str, Any]:
    """One result document: a bench document (``results`` list) or a load-test document
    (``levels`` list). A document without ``schema`` is read as a bench document.
    InvalidInputError, naming the file and what was expected, for anything else."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidInputError(f"{path}: cannot read: {error.strerror or error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"{path}: not valid JSON: {error}") from error
    expected = " or ".join(f"{schema} with a {rows!r} list" for schema, rows in ROWS.items())
    if not isinstance(document, dict):
        raise InvalidInputError(
            f"{path}: not a result document (expected a JSON object: {expected})"
        )
    schema = SCHEMA if document.get("schema") is None else document["schema"]
    if not isinstance(schema, str) or schema not in ROWS:
        raise InvalidInputError(
            f"{path}: schema {schema!r} is not supported (expected {', '.join(SCHEMAS)})"
        )
    rows = ROWS[schema]
    if isinstance(document.get(rows), list):
        return document
    if document.get("schema") is None:
        raise InvalidInputError(f"{path}: not a result document (no 'schema'; expected {expected})")
    raise InvalidInputError(f"{path}: not a valid {schema} document (no {rows!r} list)")


def render_report(documents: Sequence[Mapping[str, Any]]) -> str:
    """The report page for already-loaded result documents, as an HTML string: one section
    per document in the order given, then the bench charts, then the load-test charts."""
    bench = [d for d in documents if not is_loadtest(d)]
    loads = [d for d in documents if is_loadtest(d)]
    sections, subjects = [], []
    counts = {"bench": 0, "loadtest": 0}
    for document in documents:
        if is_loadtest(document):
            sections.append(loadtest_section(counts["loadtest"], document))
            subjects.append(describe_loadtest(document))
            counts["loadtest"] += 1
        else:
            sections.append(bench_section(counts["bench"], document))
            subjects.append(describe(document))
            counts["bench"] += 1
    plots = [*build_plots(bench), *loadtest_plots(loads)]
    return render_page(sections, subjects, plots)


def write_report(result_paths: Sequence[Path], output: Path) -> Path:
    """Read every result file, write the report page to ``output``; return ``output``."""
    if not result_paths:
        raise InvalidInputError("no result files given (inferpack bench or loadtest JSON)")
    documents = [load_result(Path(path)) for path in result_paths]
    page = render_report(documents)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output
