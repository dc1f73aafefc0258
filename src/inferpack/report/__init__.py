"""report: one self-contained HTML page from result files (rendering only).

``write_report`` reads ``inferpack bench`` documents (schema ``inferpack.bench/1``),
``inferpack loadtest`` documents (schema ``inferpack.loadtest/1``), ``inferpack simulate``
documents (``inferpack.simulation/1``), fleet-policy comparisons
(``inferpack.policies/1``, benchmarks/fleet_policies.py) and ``inferpack plan``
files (``plan.yaml``, told apart by the ``.yaml``/``.yml`` suffix), in any mix, and writes
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
from inferpack.report.plan import PlanDocument, is_plan_path, load_plan, plan_section
from inferpack.report.plan import describe as describe_plan
from inferpack.report.plan_plots import plan_plots
from inferpack.report.plots import build_plots, describe
from inferpack.report.policies import SCHEMA as POLICIES_SCHEMA
from inferpack.report.policies import describe as describe_policies
from inferpack.report.policies import is_policies, policies_plots, policies_section
from inferpack.report.simulation import SCHEMA as SIMULATION_SCHEMA
from inferpack.report.simulation import describe as describe_simulation
from inferpack.report.simulation import is_simulation, simulation_plots, simulation_section

SCHEMA = "inferpack.bench/1"
SCHEMAS = (SCHEMA, LOADTEST_SCHEMA, SIMULATION_SCHEMA, POLICIES_SCHEMA)
# The list of rows each schema must carry.
ROWS = {
    SCHEMA: "results",
    LOADTEST_SCHEMA: "levels",
    SIMULATION_SCHEMA: "servers",
    POLICIES_SCHEMA: "policies",
}

# What a page is made of: result documents (JSON) and plans (plan.yaml).
Source = Mapping[str, Any] | PlanDocument

__all__ = [
    "LOADTEST_SCHEMA",
    "POLICIES_SCHEMA",
    "SCHEMA",
    "SCHEMAS",
    "SIMULATION_SCHEMA",
    "PlanDocument",
    "load",
    "load_plan",
    "load_result",
    "render_report",
    "write_report",
]


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


def load(path: Path) -> Source:
    """A plan for a ``.yaml``/``.yml`` file, else a result document (``load_result``)."""
    return load_plan(path) if is_plan_path(path) else load_result(path)


def _section(document: Source, counts: dict[str, int]) -> tuple[str, str]:
    """(section HTML, subject) of one document; ``counts`` numbers the sections per kind."""
    if isinstance(document, PlanDocument):
        kind, subject = "plan", describe_plan(document)
        section = plan_section(counts[kind], document)
    elif is_loadtest(document):
        kind, subject = "loadtest", describe_loadtest(document)
        section = loadtest_section(counts[kind], document)
    elif is_simulation(document):
        kind, subject = "simulation", describe_simulation(document)
        section = simulation_section(counts[kind], document)
    elif is_policies(document):
        kind, subject = "policies", describe_policies(document)
        section = policies_section(counts[kind], document)
    else:
        kind, subject = "bench", describe(document)
        section = bench_section(counts[kind], document)
    counts[kind] += 1
    return section, subject


def render_report(documents: Sequence[Source]) -> str:
    """The report page for already-loaded documents, as an HTML string: one section per
    document in the order given, then the bench, load-test and plan charts."""
    results = [d for d in documents if not isinstance(d, PlanDocument)]
    bench = [
        d for d in results if not is_loadtest(d) and not is_simulation(d) and not is_policies(d)
    ]
    loads = [d for d in results if is_loadtest(d)]
    simulations = [d for d in results if is_simulation(d)]
    policies = [d for d in results if is_policies(d)]
    plans = [d for d in documents if isinstance(d, PlanDocument)]
    counts = {"bench": 0, "loadtest": 0, "plan": 0, "simulation": 0, "policies": 0}
    rendered = [_section(document, counts) for document in documents]
    sections, subjects = [s for s, _ in rendered], [subject for _, subject in rendered]
    plots = [
        *build_plots(bench),
        *loadtest_plots(loads),
        *plan_plots(plans),
        *simulation_plots(simulations),
        *policies_plots(policies),
    ]
    return render_page(sections, subjects, plots)


def write_report(result_paths: Sequence[Path], output: Path) -> Path:
    """Read every result or plan file, write the report page to ``output``; return it."""
    if not result_paths:
        raise InvalidInputError(
            "no result files given (inferpack bench or loadtest JSON, or a plan.yaml)"
        )
    documents = [load(Path(path)) for path in result_paths]
    page = render_report(documents)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output
