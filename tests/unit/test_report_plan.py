"""inferpack.report with plan.yaml files: the plan section, its tables and its charts."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from inferpack.errors import InferpackError
from inferpack.plan.formats import ModelShare, Plan, PlanSummary, ServerPlan, write_plan
from inferpack.report import load, render_report, write_report
from inferpack.report.plan import PlanDocument, load_plan
from tests.unit.test_report import ALL_PLOTS, PNG_SIGNATURE, _images, make_document

PLAN_PLOTS = ["plan-cost", "plan-utilisation", "plan-latency"]
ALTERNATIVES = (
    {"instance_type": "m5.xlarge", "feasible": True, "servers": 10, "usd_per_hour": 1.92,
     "usd_per_model_hour": 0.192, "lower_bound_usd_per_hour": 1.536},
    {"instance_type": "g5.xlarge", "feasible": True, "servers": 2, "usd_per_hour": 2.012,
     "usd_per_model_hour": 0.2012, "lower_bound_usd_per_hour": 1.006},
    {"instance_type": "inf2.xlarge", "feasible": False,
     "reason": "3 of 10 models cannot run on it"},
)  # fmt: skip


def _server(
    name: str, models: range, *, memory: float, compute: float, p90: float | None
) -> ServerPlan:
    """A server named after its type (``g5-xlarge-001``) with models of 10 req/s each."""
    kind, usd = ("g5.xlarge", 1.006) if name.startswith("g5") else ("m5.xlarge", 0.192)
    shares = tuple(ModelShare(f"model-{i}", "cnn", 10.0) for i in models)
    return ServerPlan(name, kind, usd, shares, len(models) * 500.0, memory, compute, p90)


def make_plan(*, p90: bool = True, alternatives: bool = True) -> Plan:
    """Three m5.xlarge servers and one g5.xlarge, ten models of 10 req/s each."""
    m5 = 40.0 if p90 else None
    servers = (
        _server("g5-xlarge-001", range(4), memory=0.85, compute=0.75, p90=90.0 if p90 else None),
        _server("m5-xlarge-001", range(4, 6), memory=0.5, compute=0.6, p90=m5),
        _server("m5-xlarge-002", range(6, 8), memory=0.5, compute=0.6, p90=m5),
        _server("m5-xlarge-003", range(8, 10), memory=0.3, compute=0.6, p90=m5),
    )
    summary = PlanSummary(
        slo_p90_ms=100.0, solver="milp", solve_seconds=1.25, objective_usd_per_hour=1.582,
        lower_bound_usd_per_hour=1.5, gap=0.0518, status="optimal",
        notes=("profiles for kind <cnn> measured at batch 1",),
    )  # fmt: skip
    return Plan(summary, servers, ALTERNATIVES if alternatives else ())


def _plan_file(tmp_path: Path, plan: Plan, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    write_plan(path, plan)
    return path


def _plot_ids(page: str) -> list[str]:
    return re.findall(r'<figure id="plot-([a-z0-9-]+)">', page)


def _table(page: str, css: str) -> str:
    return page.split(f'<table class="{css}">')[1].split("</table>", maxsplit=1)[0]


def _row(table: str, label: str) -> str:
    return table.split(f'<th scope="row">{label}</th>')[1].split("</tr>", maxsplit=1)[0]


def _check_images(page: str, count: int) -> None:
    images = _images(page)
    assert len(images) == count
    for png, alt, width, height in images:
        assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000  # a drawn chart
        assert struct.unpack(">II", png[16:24]) == (width, height) and alt


def test_plan_section_shows_summary_comparison_types_and_three_charts(tmp_path: Path) -> None:
    path = _plan_file(tmp_path, make_plan())
    page = write_report([path], tmp_path / "report.html").read_text(encoding="utf-8")

    assert f"<title>inferpack report: plan {path}</title>" in page
    assert '<section class="document plan" id="plan-0">' in page
    for fact in ("SLO: p90 ≤ 100 ms", "solver: milp (optimal)", "solved in 1.25 s",
                 "caps: memory 90%, compute 80% (the planner&#x27;s defaults)",
                 "<li>profiles for kind &lt;cnn&gt; measured at batch 1</li>"):  # fmt: skip
        assert fact in page, fact

    summary = _table(page, "plan-summary")  # servers, USD/h, per model-hour, models, ...
    cells = re.findall(r'<td class="num">([^<]*)</td>', summary)
    assert cells == ["4", "1.58", "0.1582", "10", "10", "100", "1.50", "5.18", "1.25"]

    comparison = _table(page, "plan-alternatives")
    assert comparison.count("<tr") == 1 + 3  # mixed, then feasible types cheapest first
    labels = re.findall(r'<th scope="row">([^<]*)</th>', comparison)
    assert labels == ["mixed (this plan)", "m5.xlarge alone", "g5.xlarge alone"]
    assert re.findall(r'<td class="num">([^<]*)</td>', _row(comparison, "m5.xlarge alone")) == [
        "10", "1.92", "0.192", "1.54", "+21.4 %"
    ]  # fmt: skip
    assert _row(comparison, "g5.xlarge alone").endswith('<td class="num">+27.2 %</td>')
    assert "<li>inf2.xlarge: 3 of 10 models cannot run on it</li>" in page

    types = _table(page, "plan-types")
    m5 = re.findall(r'<td class="num">([^<]*)</td>', _row(types, "m5.xlarge"))
    assert m5 == ["3", "6", "6", "60.0", "0.576", "43.3", "60.0", "40.0"]
    assert "Per instance type (2)" in page and "Servers (4)" in page
    assert "model-0, model-1, model-2, model-3</td>" in _table(page, "plan-servers")

    assert _plot_ids(page) == PLAN_PLOTS
    assert "Cost: the mixed plan beside each instance type alone" in page
    _check_images(page, 3)


def test_plan_without_predictions_or_alternatives_has_two_charts(tmp_path: Path) -> None:
    page = render_report([load(_plan_file(tmp_path, make_plan(p90=False, alternatives=False)))])

    assert "The plan file lists no single-type alternatives." in page
    assert _table(page, "plan-alternatives").count("<tr") == 1 + 1
    assert "max predicted p90 ms" not in page and "predicted p90 ms" not in page
    assert _plot_ids(page) == ["plan-cost", "plan-utilisation"]
    _check_images(page, 2)


def test_tolerated_slowdown_is_a_server_column_where_the_plan_has_it(tmp_path: Path) -> None:
    path = _plan_file(tmp_path, make_plan())
    data = yaml.safe_load(path.read_text())
    for i, server in enumerate(data["servers"]):
        server["tolerated_slowdown"] = 1.25 + i
    path.write_text(yaml.safe_dump(data))
    page = render_report([load(path)])
    servers = _table(page, "plan-servers")
    assert "<th>tolerated slowdown</th>" in servers
    assert '<td class="num">1.25</td>' in servers and '<td class="num">2.25</td>' in servers
    plain = render_report([load(_plan_file(tmp_path, make_plan(), "plain.yaml"))])
    assert "tolerated slowdown" not in plain


def test_caps_written_in_the_plan_file_are_used(tmp_path: Path) -> None:
    path = _plan_file(tmp_path, make_plan())
    data = yaml.safe_load(path.read_text())
    data["plan"] |= {"max_memory_utilization": 0.7, "max_compute_utilization": 0.5}
    path.write_text(yaml.safe_dump(data))
    document = load_plan(path)

    assert (document.memory_cap, document.compute_cap, document.caps_from_file) == (0.7, 0.5, True)
    assert "caps: memory 70%, compute 50% (from the plan file)" in render_report([document])


def test_plans_bench_and_order_mix_on_one_page(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(make_document()))
    first = _plan_file(tmp_path, make_plan(), "a.yml")
    second = _plan_file(tmp_path, make_plan(p90=False), "b.yaml")
    documents = [load(first), load(bench), load(second)]
    assert isinstance(documents[0], PlanDocument) and not isinstance(documents[1], PlanDocument)
    page = render_report(documents)

    ids = re.findall(r'<section class="document[^"]*" id="([a-z]+-\d)">', page)
    assert ids == ["plan-0", "document-0", "plan-1"]
    plans = [*PLAN_PLOTS, "plan-cost-2", "plan-utilisation-2"]
    assert _plot_ids(page) == [*ALL_PLOTS, *plans]
    _check_images(page, len(ALL_PLOTS) + len(plans))
    assert "from 3 result documents" in page


def test_text_from_plan_files_is_escaped(tmp_path: Path) -> None:
    plan = make_plan()
    odd = "<script>alert('x')</script>"
    servers = (replace(plan.servers[0], name=odd), *plan.servers[1:])
    path = _plan_file(tmp_path, replace(plan, servers=servers))
    page = render_report([load(path)])

    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("servers: [", r"plan\.yaml: not valid YAML"),
        ("just text", r"plan\.yaml: expected a plan with a 'servers' list"),
        ("servers: []\nplan: {solver: x}", r"plan\.yaml: plan: missing or invalid field"),
        ("servers: [{name: a, instance_type: t, models: [{name: m}]}]\nplan: "
         "{slo_p90_ms: 1, objective_usd_per_hour: 1}\nalternatives: [3]",
         r"plan\.yaml: alternatives\[0\] must be a mapping with an instance_type"),
        ("servers: [{name: a, instance_type: t, usd_per_hour: cheap, models: [{name: m}]}]\n"
         "plan: {slo_p90_ms: 1, objective_usd_per_hour: 1}",
         r"plan\.yaml: servers\[0\]: usd_per_hour must be a number, got 'cheap'"),
        ("servers: [{name: a}]\nplan: {slo_p90_ms: 1, objective_usd_per_hour: 1}",
         r"plan\.yaml: servers\[0\]: has no models; .*servers\[0\]: instance_type must be"),
    ],
)  # fmt: skip
def test_an_invalid_plan_file_names_the_file_and_the_problem(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(content)
    with pytest.raises(InferpackError, match=message):
        write_report([path], tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_a_missing_plan_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InferpackError, match=r"nowhere\.yaml: cannot read"):
        load(tmp_path / "nowhere.yaml")
