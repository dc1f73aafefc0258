"""``inferpack bench --compiled-bucket`` on CPU through the real CLI, then its report table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.test_bench_cli import _inferpack

# Short windows: the pipeline is checked, not the numbers.
FAST = ["--duration-s", "0.3", "--warmup-s", "0.1", "--repeats", "1", "--device", "cpu"]


def _bench(path: Path, *args: str) -> dict[str, object]:
    done = _inferpack("bench", "--workload", "tiny-mlp", *FAST, *args, "--output", str(path))
    assert done.returncode == 0, done.stderr
    document: dict[str, object] = json.loads(path.read_text())
    return document


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-compiled") / "chunked.json"
    _bench(path, "--batch-size", "1,4,8", "--compiled-bucket", "1,4", "--compile-mode", "none")
    return path


def test_every_compile_batch_meets_every_inference_batch(chunked: Path) -> None:
    document = json.loads(chunked.read_text())
    results = document["results"]
    assert {(r["compiled_bucket"], r["batch_size"]) for r in results} == {
        (c, b) for c in (1, 4) for b in (1, 4, 8)
    }
    assert document["spec"]["compiled_buckets"] == [1, 4]
    assert document["spec"]["compile_mode"] == "none"
    for result in results:
        assert result["items_per_s"] > 0 and result["latency_ms"]["p90"] > 0
        assert result["accuracy"]["relative_l2"] < 1e-5  # padded rows never reach outputs
    assert document["summary"]["condition_b"]["compiled_bucket"] in (1, 4)


def test_report_renders_the_compile_batch_table(chunked: Path, tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    done = _inferpack("report", str(chunked), "--output", str(output))
    assert done.returncode == 0, done.stderr
    page = output.read_text()
    table = page.split('<table class="compiled">')[1].split("</table>")[0]
    assert re.findall(r'<th scope="row">([^<]+)</th>', table) == ["compile 1", "compile 4"]
    assert re.findall(r"<th>(batch \d+)</th>", table) == ["batch 1", "batch 4", "batch 8"]
    assert table.count("items/s · p90") == 6
    assert '<figure id="plot-throughput">' in page


def test_inductor_compiles_the_bucket(tmp_path: Path) -> None:
    """One static-shape inductor compile of tiny-mlp (about 10 s cold)."""
    document = _bench(
        tmp_path / "inductor.json",
        "--batch-size", "1,2", "--compiled-bucket", "2", "--compile-mode", "inductor",
    )  # fmt: skip
    results = document["results"]
    assert isinstance(results, list)
    assert [(r["compiled_bucket"], r["batch_size"]) for r in results] == [(2, 1), (2, 2)]
    for result in results:
        assert result["accuracy"]["relative_l2"] < 1e-4


def test_compile_mode_without_buckets_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "none.json"
    done = _inferpack("bench", "--workload", "tiny-mlp", *FAST, "--compile-mode", "inductor",
                      "--output", str(path))  # fmt: skip
    assert done.returncode == 2 and not path.exists()
    assert "--compile-mode needs --compiled-bucket" in done.stdout + done.stderr


def test_cudagraphs_on_cpu_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "graphs.json"
    done = _inferpack("bench", "--workload", "tiny-mlp", *FAST, "--batch-size", "1",
                      "--compiled-bucket", "1", "--compile-mode", "cudagraphs",
                      "--output", str(path))  # fmt: skip
    assert done.returncode == 1 and not path.exists()
    assert "cudagraphs needs a CUDA device" in done.stdout + done.stderr
