"""inferpack.report with load-test documents (``inferpack.loadtest/1``), alone and mixed."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from inferpack.errors import InvalidInputError
from inferpack.report import SCHEMAS, load_result, render_report, write_report
from tests.unit.test_report import ALL_PLOTS, PNG_SIGNATURE, _images, _plot_ids, make_document

METHOD = "Closed loop: each worker keeps its share of the concurrency in flight."


def _level(load: float, index: int, *, mode: str) -> dict[str, Any]:
    """A level that saturates: throughput levels off, latency climbs with the load."""
    throughput = min(100.0 * load, 1500.0) if mode == "closed" else min(load, 180.0)
    p50 = 2.0 * (1 + index) ** 2
    level: dict[str, Any] = {
        "concurrency": int(load) if mode == "closed" else None,
        "rate_rps": float(load) if mode == "open" else None,
        "stable": index != 1,  # the middle level never settled
        "windows": [{"throughput_rps": throughput, "latency_p99_ms": p50 * 3, "requests": 99}]
        * (3 if index != 1 else 6),
        "requests": int(throughput * 6),
        "throughput_rps": throughput,
        "items_per_s": throughput * 4,
        "latency_ms": {
            key: p50 * factor
            for key, factor in (("p50", 1), ("p90", 2), ("p95", 2.5), ("p99", 3), ("max", 5))
        },
        "errors": {"503": 2, "UNAVAILABLE": 1} if index == 2 else {},
        "send_lateness_ms": None,
        "late_fraction": None,
        "per_model_requests": {"tiny-mlp": 10},
    }
    if mode == "open":
        level["send_lateness_ms"] = {"p50": 0.1, "p99": 0.5 * (index + 1), "max": 9.0}
        level["late_fraction"] = (0.0, 0.03, 0.25)[index]
    return level


def make_loadtest(mode: str = "closed", model: str = "tiny-mlp") -> dict[str, Any]:
    """Three levels: closed loop at concurrency 1, 8, 32 or open loop at 50, 100, 200 req/s."""
    loads = (1, 8, 32) if mode == "closed" else (50, 100, 200)
    levels = [_level(load, index, mode=mode) for index, load in enumerate(loads)]
    name = (lambda v: f"concurrency {v}") if mode == "closed" else (lambda v: f"rate {v} req/s")
    return {
        "schema": "inferpack.loadtest/1",
        "spec": {
            "url": "http://127.0.0.1:8000", "transport": "http-binary", "models": [model, "m2"],
            "distribution": "zipf:1.1", "mode": mode, "levels": list(loads), "batch_size": 4,
            "duration_s": 6.0, "warmup_s": 1.0, "window_s": 2.0, "max_windows": 6,
            "workers": 2, "seed": 7,
        },
        "environment": {"cpu": "Intel Xeon", "cores": 8, "python": "3.11.7",
                        "inferpack": "0.1.0", "git_sha": "abc1234", "platform": "Linux"},
        "method": METHOD,
        "levels": levels,
        "warnings": [f"{name(loads[1])}: not stable within 6 windows",
                     f"{name(loads[2])}: errors {{'503': 2, 'UNAVAILABLE': 1}}"],
    }  # fmt: skip


def _table(page: str, index: int = 0) -> str:
    return page.split('<table class="levels">')[1 + index].split("</table>", maxsplit=1)[0]


def _check_images(page: str, count: int) -> None:
    images = _images(page)
    assert len(images) == count
    for png, alt, width, height in images:
        assert png.startswith(PNG_SIGNATURE)
        assert len(png) > 10_000  # a drawn chart, not an empty canvas
        assert struct.unpack(">II", png[16:24]) == (width, height)
        assert alt


def test_closed_loop_renders_spec_warnings_levels_and_the_curve() -> None:
    page = render_report([make_loadtest()])

    title = "loadtest 2 models over http-binary, closed loop"
    assert f"<title>inferpack report: {title}</title>" in page and f"<h2>{title}</h2>" in page
    for fact in ("url: http://127.0.0.1:8000", "transport: http-binary", "mode: closed loop",
                 "distribution: zipf:1.1", "models (2): tiny-mlp, m2", "workers: 2",
                 "batch size: 4", f"Method: {METHOD}", "Intel Xeon (8 cores)"):  # fmt: skip
        assert fact in page, fact
    assert '<li class="unstable">concurrency 8: not stable within 6 windows</li>' in page
    assert "<li>concurrency 32: errors" in page
    assert "Levels (3; 1 unstable, highlighted)" in page

    levels = _table(page)
    assert levels.count("<tr") == 1 + 3
    for header in ("concurrency", "stable", "requests", "req/s", "items/s", "p50 ms", "p90 ms",
                   "p95 ms", "p99 ms", "max ms", "errors"):  # fmt: skip
        assert f"<th>{header}</th>" in levels
    for header in ("target req/s", "lateness p99 ms", "late %"):  # closed loop: none of these
        assert f"<th>{header}</th>" not in levels
    rows = levels.split("<tr")[2:]
    assert rows[1].startswith(' class="unstable"') and rows[0].startswith(">")
    assert '<td class="num">8</td><td>no</td><td class="num">6</td>' in rows[1]
    assert '<td class="num">1,500</td><td class="num">6,000</td>' in rows[2]  # req/s, items/s
    assert "<td>503: 2, UNAVAILABLE: 1</td>" in rows[2] and rows[0].count("<td>none</td>") == 1

    assert _plot_ids(page) == ["curve"]
    _check_images(page, 1)


def test_open_loop_shows_rates_lateness_and_achieved_vs_target() -> None:
    page = render_report([make_loadtest("open")])

    levels = _table(page)
    for header in ("target req/s", "lateness p99 ms", "late %"):
        assert f"<th>{header}</th>" in levels
    assert "<th>concurrency</th>" not in levels
    rows = levels.split("<tr")[2:]
    assert rows[0].startswith('><td class="num">50</td>')
    assert rows[2].endswith('<td class="num">1.50</td><td class="num">25.0</td></tr></tbody>')
    assert '<li class="unstable">rate 100 req/s: not stable within 6 windows</li>' in page

    assert _plot_ids(page) == ["curve", "rates"]
    assert "Open loop: achieved vs target rate" in page
    _check_images(page, 2)


def test_mixed_bench_and_loadtest_documents_keep_their_order() -> None:
    documents = [make_loadtest(), make_document(), make_loadtest("open", "resnet50")]
    page = render_report(documents)

    subjects = ("loadtest 2 models over http-binary, closed loop, resnet50 on cuda:0, "
                "loadtest 2 models over http-binary, open loop")  # fmt: skip
    assert f"<title>inferpack report: {subjects}</title>" in page
    ids = re.findall(r'<section class="document[^"]*" id="([a-z]+-\d)">', page)
    assert ids == ["loadtest-0", "document-0", "loadtest-1"]
    assert '<table class="summary">' in page and page.count('<table class="levels">') == 2
    assert '<tr class="noisy">' in page  # the bench table renders as before
    assert _plot_ids(page) == [*ALL_PLOTS, "curve", "rates"]
    _check_images(page, len(ALL_PLOTS) + 2)
    assert "from 3 result documents" in page


def test_text_from_loadtest_documents_is_escaped() -> None:
    document = make_loadtest(model="<script>alert('x')</script>")
    document["spec"]["url"] = 'http://h/?a="1"&b=<2>'
    document["method"] = "odd <b>method</b>"
    document["warnings"].append("<img src=x onerror=alert(1)>")
    document["levels"][0]["errors"] = {"<i>code</i>": 3}
    page = render_report([document])

    assert "<script" not in page and "<b>" not in page and "<img src=x" not in page
    assert "<i>" not in page and "&lt;i&gt;code&lt;/i&gt;: 3" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;, m2" in page
    assert "http://h/?a=&quot;1&quot;&amp;b=&lt;2&gt;" in page
    assert "odd &lt;b&gt;method&lt;/b&gt;" in page
    _check_images(page, 1)


def test_missing_fields_and_nulls_are_tolerated() -> None:
    sparse = {
        "schema": "inferpack.loadtest/1",
        "spec": None,
        "environment": None,
        "method": None,
        "levels": [
            {"concurrency": None, "rate_rps": None, "stable": None, "windows": None,
             "latency_ms": None, "errors": None, "send_lateness_ms": None},
            {"concurrency": 4, "throughput_rps": 10.0, "latency_ms": {}, "errors": {}},
            "not a level",
        ],
        "warnings": None,
    }  # fmt: skip
    page = render_report([sparse, {"schema": "inferpack.loadtest/1", "levels": []}])

    assert "loadtest 0 models over unknown transport" in page
    assert _table(page).count("<tr") == 1 + 2 and _table(page, 1).count("<tr") == 1
    assert "No results to plot." in page and "<img" not in page


def test_load_result_accepts_both_schemas(tmp_path: Path) -> None:
    assert SCHEMAS == (
        "inferpack.bench/1",
        "inferpack.loadtest/1",
        "inferpack.simulation/1",
        "inferpack.policies/1",
    )
    paths = []
    for name, document in (("lt.json", make_loadtest()), ("bench.json", make_document())):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(document))
        assert load_result(paths[-1]) == document
    page = write_report(paths, tmp_path / "report.html").read_text(encoding="utf-8")
    assert _plot_ids(page) == [*ALL_PLOTS, "curve"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema": "inferpack.loadtest/1", "results": []}',
         r"bad\.json: not a valid inferpack\.loadtest/1 document \(no 'levels' list\)"),
        ('{"levels": []}', r"bad\.json: not a result document \(no 'schema'; expected "
         r"inferpack\.bench/1 with a 'results' list or inferpack\.loadtest/1 with a 'levels'"),
        ('{"schema": "inferpack.loadtest/2", "levels": []}',
         r"bad\.json: schema 'inferpack\.loadtest/2' is not supported \(expected "
         r"inferpack\.bench/1, inferpack\.loadtest/1, inferpack\.simulation/1, "
         r"inferpack\.policies/1\)"),
        ('{"schema": ["x"], "levels": []}', "not supported"),
        ('"text"', r"bad\.json: not a result document \(expected a JSON object"),
    ],
)  # fmt: skip
def test_load_result_names_the_file_and_what_was_expected(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        load_result(path)
