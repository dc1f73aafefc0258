"""``inferpack bench`` on CPU through the real CLI, then ``inferpack report`` on its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_report_browser import CHROMIUM, HARNESS, _dump_dom, _seen

# Short windows: CI checks that the whole pipeline works, not the numbers.
FAST = ["--duration-s", "0.9", "--warmup-s", "0.2", "--repeats", "3", "--device", "cpu"]


def _inferpack(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from inferpack.cli import main; main()", *args]
    env = {**os.environ, "COLUMNS": "200"}  # rich tables: one row a line
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, env=env
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench")
    paths = {}
    for workload, extra in (
        (
            "tiny-mlp",
            [
                "--precision",
                "fp32,bf16",
                "--batch-size",
                "1,8",
                "--instances",
                "1,2",
                "--instance-type",
                "c7i.2xlarge",
            ],
        ),
        ("small-cnn", ["--batch-size", "1,4", "--price-usd-per-hour", "0.308", "--profile"]),
    ):
        path = folder / f"{workload}.json"
        done = _inferpack("bench", "--workload", workload, *FAST, *extra, "--output", str(path))
        assert done.returncode == 0, done.stderr
        paths[workload] = path
    return paths


def test_bench_document_has_every_configuration(results: dict[str, Path]) -> None:
    document = json.loads(results["tiny-mlp"].read_text())
    assert document["schema"] == "inferpack.bench/1"
    assert document["spec"]["device"] == "cpu"
    assert document["environment"]["cores"] >= 1 and document["environment"]["torch"]
    configs = {(r["precision"], r["batch_size"], r["instances"]) for r in document["results"]}
    assert configs == {(p, b, i) for p in ("fp32", "bf16") for b in (1, 8) for i in (1, 2)}
    for result in document["results"]:
        latencies = result["samples"]["batch_latency_ms"]
        assert len(latencies) > 0 and result["items_per_s"] > 0
        assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
        assert len(result["repeats"]) == 3
        assert result["utilisation"]["cpu_percent_mean"] is not None
        assert result["cost"]["price_usd_per_hour"] == 0.357  # c7i.2xlarge, us-east-1
        expected = result["items_per_s"] * 0.36 / 0.357
        assert result["cost"]["inferences_per_0_0001_usd"] == pytest.approx(expected)
        accuracy = result["accuracy"]
        if result["precision"] == "fp32":
            assert accuracy["max_abs_error"] == 0.0 and accuracy["cosine_similarity"] > 0.9999
        else:
            assert 0 < accuracy["relative_l2"] < 0.05
    summary = document["summary"]
    assert summary["condition_a"]["batch_size"] == 1
    best = max(r["items_per_s"] for r in document["results"])
    assert summary["condition_b"]["items_per_s"] == best


def test_classifier_accuracy_and_profile(results: dict[str, Path]) -> None:
    document = json.loads(results["small-cnn"].read_text())
    result = document["results"][0]
    assert result["accuracy"]["top1_agreement"] == 1.0
    assert result["accuracy"]["top5_agreement"] == 1.0
    stages = result["profile"]["stages_ms"]
    assert len(stages) >= 4 and all(ms >= 0 for ms in stages.values())
    assert result["cost"]["price_usd_per_hour"] == 0.308


def test_report_from_bench_results(results: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    done = _inferpack(
        "report", str(results["tiny-mlp"]), str(results["small-cnn"]), "--output", str(output)
    )
    assert done.returncode == 0, done.stderr
    page = output.read_text()
    assert "tiny-mlp" in page and "small-cnn" in page
    assert page.count("data:image/png;base64,") >= 4


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test installs it)")
def test_bench_report_images_decode_in_chromium(
    results: dict[str, Path], tmp_path: Path, static_site: str
) -> None:
    """The acceptance check: the report of real CPU bench runs, opened in a browser."""
    done = _inferpack(
        "report",
        str(results["tiny-mlp"]),
        str(results["small-cnn"]),
        "--output",
        str(tmp_path / "report.html"),
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "harness.html").write_text(HARNESS)
    seen = _seen(_dump_dom(f"{static_site}/harness.html", tmp_path / "chromium-profile"))
    assert seen["sections"] == 2 and seen["fetched"] == []
    assert len(seen["images"]) >= 4  # throughput, latency, cost, utilisation (+ profile)
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0, image


def test_catalog_override_prices_a_bench_run(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text(
        "instances:\n"
        "  - {name: c7i.2xlarge, region: us-east-1, price_usd_per_hour: 0.2,\n"
        "     price_date: '2026-12-01', source: negotiated rate}\n"
    )
    listed = _inferpack("catalog", "--catalog", str(override))
    assert listed.returncode == 0 and "negotiated" not in listed.stderr
    assert "0.2 " in listed.stdout
    output = tmp_path / "priced.json"
    done = _inferpack(
        "bench",
        "--workload",
        "tiny-mlp",
        *FAST,
        "--batch-size",
        "1",
        "--instance-type",
        "c7i.2xlarge",
        "--catalog",
        str(override),
        "--output",
        str(output),
    )
    assert done.returncode == 0, done.stderr
    cost = json.loads(output.read_text())["results"][0]["cost"]
    assert cost["price_usd_per_hour"] == 0.2


def test_catalog_adds_a_cpu_instance_without_accelerator_fields(tmp_path: Path) -> None:
    override = tmp_path / "cpu.yaml"
    override.write_text(
        "instances:\n"
        "  - {name: c8g.large, region: us-east-1, basis: on-demand, price_usd_per_hour: 0.0798,\n"
        "     price_date: '2026-12-01', source: list price, vcpu: 2, memory_gib: 4}\n"
    )
    listed = _inferpack("catalog", "--catalog", str(override))
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "c8g.large" in listed.stdout and "0.0798" in listed.stdout


def test_bench_refuses_ambiguous_model_choice(tmp_path: Path) -> None:
    done = _inferpack("bench", "--output", str(tmp_path / "x.json"))
    assert done.returncode == 2
    assert "--workload" in done.stderr
