"""Loadtest documents in the report: levels table, curve, escaping, schema checks."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from inferpack.errors import InvalidInputError
from inferpack.report import load_result, render_report


def _document(mode: str = "closed", model: str = "tiny-mlp") -> dict[str, object]:
    levels = []
    for index, level in enumerate((1, 8, 32)):
        levels.append(
            {
                "concurrency": level if mode == "closed" else None,
                "rate_rps": float(level * 10) if mode == "open" else None,
                "stable": index != 1,
                "windows": [],
                "requests": 100 * level,
                "throughput_rps": 100.0 * level,
                "items_per_s": 100.0 * level,
                "latency_ms": {
                    "p50": 1.0 + index,
                    "p90": 2.0 + index,
                    "p95": 2.5 + index,
                    "p99": 3.0 + index,
                    "max": 9.0,
                    "mean": 1.5,
                },
                "errors": {"503": 2} if index == 2 else {},
                "send_lateness_ms": {"p50": 0.1, "p99": 0.5, "max": 2.0}
                if mode == "open"
                else None,
                "late_fraction": 0.002 if mode == "open" else None,
                "per_model_requests": {model: 100 * level},
            }
        )
    return {
        "schema": "inferpack.loadtest/1",
        "spec": {
            "url": "http://127.0.0.1:8000",
            "transport": "http-binary",
            "models": [model],
            "mode": mode,
            "distribution": "sequential",
            "batch_size": 1,
            "workers": 1,
            "window_s": 1.0,
            "warmup_s": 1.0,
        },
        "method": "closed loop <method>",
        "levels": levels,
        "warnings": ["concurrency 8: not stable within 10 windows"],
    }


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_closed_and_open_documents_render_levels_and_curves() -> None:
    page = render_report([_document(), _document("open", "<script>x</script>")])
    assert "c=8" in page and "80 req/s" in page
    assert "503: 2" in page
    assert "&lt;script&gt;" in page and "<script>x" not in page
    assert "closed loop &lt;method&gt;" in page
    images = _images(page)
    assert len(images) == 2  # the curve, and achieved vs target for the open loop
    assert all(image.startswith(b"\x89PNG") and len(image) > 5000 for image in images)


def test_mixed_with_bench_documents(tmp_path: Path) -> None:
    from tests.unit.test_report import make_document

    page = render_report([make_document(), _document()])
    assert "Throughput-latency curve" in page and "best throughput" in page.lower()


def test_load_result_checks_the_schema(tmp_path: Path) -> None:
    good = tmp_path / "lt.json"
    good.write_text(json.dumps(_document()))
    assert load_result(good)["schema"] == "inferpack.loadtest/1"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "inferpack.loadtest/1", "results": []}))
    with pytest.raises(InvalidInputError, match="no 'levels' list"):
        load_result(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "something/9", "levels": []}))
    with pytest.raises(InvalidInputError, match="not supported"):
        load_result(other)
