"""Triton's perf_analyzer, unmodified, measures inferpack over HTTP, gRPC and gRPC streams.

perf_analyzer aborts on a server whose statistics disagree (compute_input, compute_infer
and compute_output counts must match) and refuses one without the model-configuration
RPC, so a run that completes and reports the server-side split is the proof.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.perf_analyzer import (
    SERVER_COLUMNS,
    PerfAnalyzer,
    PerfAnalyzerUnavailableError,
    find_perf_analyzer,
    read_csv,
)
from tests.helpers import ServerThread


@pytest.fixture(scope="module")
def perf_analyzer() -> PerfAnalyzer:
    try:
        return find_perf_analyzer()
    except PerfAnalyzerUnavailableError as error:
        pytest.skip(str(error))


@pytest.mark.parametrize(
    ("protocol", "extra"),
    [("http", []), ("grpc", []), ("grpc", ["--streaming"])],
    ids=["http", "grpc", "grpc-stream"],
)
def test_perf_analyzer_reports_throughput_and_server_split(
    perf_analyzer: PerfAnalyzer,
    server: ServerThread,
    tmp_path: Path,
    protocol: str,
    extra: list[str],
) -> None:
    url = server.address if protocol == "http" else server.grpc_address
    report = tmp_path / "out.csv"
    args = [
        *("-m", "tiny-mlp", "-u", url, "-i", protocol),
        *("--concurrency-range", "1:2", "--measurement-interval", "500"),
        # Stability is not under test: a loose band keeps a busy CI machine from failing.
        *("--stability-percentage", "50", "-f", str(report)),
        *extra,
    ]
    perf_analyzer.run(args)

    rows = read_csv(report)
    # Rows come sorted by throughput, not by concurrency.
    assert sorted(row["Concurrency"] for row in rows) == [1, 2]
    for row in rows:
        assert row["Inferences/Second"] > 0
        assert set(SERVER_COLUMNS) <= row.keys()
        assert all(row[column] >= 0 for column in SERVER_COLUMNS)
        assert row["Server Compute Infer"] > 0
        assert 0 < row["p50 latency"] <= row["p90 latency"] <= row["p99 latency"]
