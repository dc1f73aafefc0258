"""inferpack.report: the self-contained HTML page rendered from bench result documents."""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inferpack.errors import InvalidInputError, MissingExtraError
from inferpack.report import load_result, render_report, write_report
from inferpack.report.html import sig3, thousands

IMG = re.compile(
    r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)"'
    r' width="(\d+)" height="(\d+)">'
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = ["throughput", "latency", "cost", "utilisation", "profile"]
BATCHES = (1, 4, 16)
A10G = {"name": "NVIDIA A10G", "driver": "550.54", "memory_mb": 23028.0}


def _result(precision: str, batch: int, *, rich: bool, noisy: bool = False) -> dict[str, Any]:
    speed = {"fp32": 1.0, "bf16": 1.7}[precision]
    items_per_s = 900.0 * speed * batch**0.6
    p50 = batch / items_per_s * 1e3
    result: dict[str, Any] = {
        "precision": precision,
        "batch_size": batch,
        "instances": 1,
        "samples": {"batch_latency_ms": [p50, p50 * 1.1, p50 * 1.3]},
        "repeats": [{"items_per_s": items_per_s, "latency_p50_ms": p50}],
        "items_per_s": items_per_s,
        "latency_ms": {
            "p50": p50, "p90": p50 * 1.2, "p95": p50 * 1.3, "p99": p50 * 1.5,
            "mean": p50 * 1.05, "min": p50 * 0.9, "max": p50 * 2,
        },
        "throughput_spread_pct": 12.5 if noisy else 1.2,
        "noisy": noisy,
        "utilisation": {"cpu_percent_mean": None, "gpu_percent_mean": None,
                        "gpu_memory_mb_max": None},
        "peak_device_memory_mb": None,
        "accuracy": None,
        "cost": None,
        "profile": None,
    }  # fmt: skip
    if rich:
        price = 4.1
        result["utilisation"] = {"cpu_percent_mean": 8.0 + batch, "gpu_percent_mean": 40.0 + batch,
                                 "gpu_memory_mb_max": 2048.0}  # fmt: skip
        result["peak_device_memory_mb"] = 512.0 + 20 * batch
        result["accuracy"] = {
            "max_abs_error": 0.0 if precision == "fp32" else 0.0123,
            "relative_l2": 0.0 if precision == "fp32" else 0.00456,
            "cosine_similarity": 1.0 if precision == "fp32" else 0.999981,
            "top1_agreement": 1.0 if precision == "fp32" else 0.875,
            "top5_agreement": 1.0,
            "keypoint_agreement": None,
        }
        result["cost"] = {
            "price_usd_per_hour": price,
            "usd_per_million": price / 3600 / items_per_s * 1e6,
            "inferences_per_0_0001_usd": items_per_s * 3600 / price * 1e-4,
        }
        if batch in (1, 16):
            result["profile"] = {"stages_ms": {"base": 2.5 * batch, "stage1": 1.0 * batch,
                                               "stage2": 0.7 * batch}}  # fmt: skip
    return result


def _pick(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("precision", "batch_size", "instances", "items_per_s", "latency_ms", "cost")
    return {key: result[key] for key in keys}


def make_document(
    model: str = "resnet50", device: str = "cuda:0", *, rich: bool = True
) -> dict[str, Any]:
    """2 precisions x 3 batch sizes; ``rich``: cost, accuracy, utilisation and a profile."""
    results = [
        _result(p, b, rich=rich, noisy=(p, b) == ("bf16", 4))
        for p in ("fp32", "bf16")
        for b in BATCHES
    ]
    batch_one = [r for r in results if r["batch_size"] == 1]
    warnings = ["noisy: bf16 batch 4 x1: repeats differ by 12.5 %"]
    if not rich:
        warnings.append("no --instance-type or --price-usd-per-hour: costs not computed")
    return {
        "schema": "inferpack.bench/1",
        "spec": {
            "model": model, "source": "workload", "device": device,
            "precisions": ["fp32", "bf16"], "batch_sizes": list(BATCHES), "instances": [1],
            "duration_s": 10.0, "warmup_s": 2.0, "repeats": 3,
            "instance_type": "g5.xlarge" if rich else None, "region": None,
            "price_usd_per_hour": 4.1 if rich else None, "profile": rich,
        },
        "environment": {
            "cpu": "AMD EPYC 7R13", "cores": 16,
            "gpu": A10G if rich else None,
            "python": "3.11.9", "torch": "2.11.0", "inferpack": "0.1.0", "git_sha": "abc1234",
            "platform": "Linux-6.1-x86_64",
        },
        "results": results,
        "summary": {
            "condition_a": _pick(max(batch_one, key=lambda r: r["items_per_s"])),
            "condition_b": _pick(max(results, key=lambda r: r["items_per_s"])),
        },
        "warnings": warnings,
    }  # fmt: skip


def _images(page: str) -> list[tuple[bytes, str, int, int]]:
    found = []
    for data, alt, width, height in IMG.findall(page):
        found.append((base64.b64decode(data, validate=True), alt, int(width), int(height)))
    return found


def _plot_ids(page: str) -> list[str]:
    return re.findall(r'<figure id="plot-([a-z]+)">', page)


def test_rich_document_renders_tables_and_every_plot() -> None:
    page = render_report([make_document()])

    assert page.startswith("<!DOCTYPE html>")
    assert '<table class="summary">' in page and '<table class="results">' in page
    assert "A: best at batch 1" in page and "B: best throughput" in page
    results = page.split('<table class="results">')[1].split("</table>")[0]
    assert results.count("<tr") == 1 + 6  # header + 2 precisions x 3 batch sizes
    for header in ("items/s", "p99 ms", "spread %", "GPU %", "peak mem MB", "cosine",
                   "top-1 agree", "USD / 1M", "inf / 0.0001 USD"):  # fmt: skip
        assert f"<th>{header}</th>" in results
    assert results.count('<tr class="noisy">') == 1
    assert '<li class="noisy">noisy: bf16 batch 4 x1' in page
    assert "NVIDIA A10G" in page and "abc1234" in page and "torch 2.11.0" in page
    assert "87.5 %" in page and "0.999981" in page  # bf16 top-1 agreement and cosine

    assert _plot_ids(page) == ALL_PLOTS
    images = _images(page)
    assert len(images) == len(ALL_PLOTS)
    for png, alt, width, height in images:
        assert png.startswith(PNG_SIGNATURE)
        assert len(png) > 10_000  # a drawn chart, not an empty canvas
        assert struct.unpack(">II", png[16:24]) == (width, height)
        assert "resnet50 on cuda:0" in alt


def test_summary_rows_show_condition_a_and_b() -> None:
    document = make_document()
    page = render_report([document])
    summary = page.split('<table class="summary">')[1].split("</table>")[0]
    rows = summary.split("<tr>")[2:]
    best_a, best_b = document["summary"]["condition_a"], document["summary"]["condition_b"]
    assert "A: best at batch 1" in rows[0] and "B: best throughput" in rows[1]
    assert f'<td class="num">{thousands(best_a["items_per_s"])}</td>' in rows[0]
    assert f'<td class="num">{sig3(best_b["latency_ms"]["p90"])}</td>' in rows[1]
    assert f'<td class="num">{sig3(best_b["cost"]["usd_per_million"])}</td>' in rows[1]
    assert "bf16" in rows[0] and "bf16" in rows[1]


def test_document_without_cost_accuracy_or_profile_has_no_such_plots() -> None:
    page = render_report([make_document(device="cpu", rich=False)])

    assert _plot_ids(page) == ["throughput", "latency"]
    assert len(_images(page)) == 2
    for header in ("USD / 1M", "cosine", "GPU %", "CPU %", "peak mem MB"):
        assert f"<th>{header}</th>" not in page
    assert "GPU: none" in page


def test_text_from_the_results_is_escaped() -> None:
    document = make_document(model="<script>alert('x')</script>")
    document["warnings"].append('odd <b>"warning"</b> & more')
    document["environment"]["cpu"] = "<img src=x onerror=alert(1)>"
    page = render_report([document])

    assert "<script" not in page and "<b>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "odd &lt;b&gt;&quot;warning&quot;&lt;/b&gt; &amp; more" in page
    assert len(_images(page)) == len(ALL_PLOTS)  # alt text is escaped too


def test_several_documents_share_the_plots() -> None:
    documents = [make_document(), make_document("bert-base", "cpu", rich=False)]
    page = render_report(documents)

    assert page.count('<section class="document"') == 2
    assert "<h2>resnet50 on cuda:0</h2>" in page and "<h2>bert-base on cpu</h2>" in page
    assert _plot_ids(page) == ALL_PLOTS
    assert all("bert-base on cpu" in alt for _, alt, _, _ in _images(page))


def test_missing_fields_and_nulls_are_tolerated() -> None:
    sparse = {
        "results": [
            {"precision": "fp32", "batch_size": 1, "items_per_s": None, "latency_ms": None},
            {"batch_size": 2, "noisy": None, "cost": None, "profile": {"stages_ms": {}}},
        ]
    }
    page = render_report([sparse, {"spec": None, "environment": None, "results": []}])

    assert "unknown model on unknown device" in page
    assert "No results to plot." in page and "<img" not in page
    assert page.count('<table class="summary">') == 2


def test_numbers_are_formatted_for_reading() -> None:
    assert sig3(0.012345) == "0.0123"
    assert sig3(12.345) == "12.3"
    assert sig3(2.9) == "2.90"
    assert sig3(99.96) == "100"
    assert sig3(1234.4) == "1,234"
    assert thousands(12345.6) == "12,346"
    assert thousands(7.25) == "7.2"


def test_write_report_reads_result_files(tmp_path: Path) -> None:
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(make_document()))
    output = write_report([source], tmp_path / "out" / "report.html")

    page = output.read_text(encoding="utf-8")
    assert len(_images(page)) == len(ALL_PLOTS)
    assert not re.search(r"<(script|link|iframe)\b|https?://", page)  # self-contained


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a result document"),
        ('{"schema": "inferpack.bench/1"}', "no 'results' list"),
        ('{"schema": "inferpack.bench/9", "results": []}', "not supported"),
    ],
)
def test_load_result_rejects_what_is_not_a_bench_result(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        load_result(path)
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_result(tmp_path / "missing.json")


def test_missing_matplotlib_names_the_report_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingExtraError) as raised:
        render_report([make_document()])
    assert raised.value.extra == "report" and raised.value.package == "matplotlib"


def test_importing_the_report_package_does_not_import_matplotlib() -> None:
    code = "import sys, inferpack.report; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
