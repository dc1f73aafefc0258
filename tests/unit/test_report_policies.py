"""The report page reads fleet-policy comparisons (benchmarks/fleet_policies.py documents)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferpack.errors import InvalidInputError
from inferpack.report import POLICIES_SCHEMA, load_result, render_report


def _document() -> dict:  # type: ignore[type-arg]
    rows = {
        "static": [{"interval": i, "servers": 10, "p90_ms": 20.0} for i in range(3)],
        "follow": [{"interval": i, "servers": 4 + i, "p90_ms": 60.0 if i == 1 else 30.0}
                   for i in range(3)],
    }  # fmt: skip
    return {
        "schema": POLICIES_SCHEMA,
        "models": 3000,
        "peak_rps": 6230.0,
        "intervals": 3,
        "interval_hours": 2.0,
        "slo_p90_ms": 50.0,
        "profile": "illustrative <b>",
        "policies": [
            {
                "name": "static",
                "server_hours": 60,
                "usd_per_day": 70.8,
                "over_slo_share": 0.0,
                "intervals_over_slo_p90": 0,
                "moves": 0,
            },
            {
                "name": "follow",
                "server_hours": 30,
                "usd_per_day": 35.4,
                "over_slo_share": 0.0123,
                "intervals_over_slo_p90": 1,
                "moves": 42,
            },
        ],
        "intervals_by_policy": rows,
    }


def test_a_policies_document_gets_its_table_and_chart(tmp_path: Path) -> None:
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(_document()))
    page = render_report([load_result(path)])
    assert "fleet policies: 3,000 models, 6,230 req/s at peak" in page
    assert '<th scope="row">follow</th>' in page and ">1.230<" in page  # % over the SLO
    assert "illustrative &lt;b&gt;" in page  # escaped
    assert 'id="plot-policies-servers"' in page


def test_a_policies_document_without_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema": POLICIES_SCHEMA}))
    with pytest.raises(InvalidInputError, match="no 'policies' list"):
        load_result(path)
