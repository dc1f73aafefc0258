"""loadtest --demand against a real server: each model at its own rate, scaled as asked."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferpack.config import ServerConfig
from tests.helpers import ServerThread, edit_model

RATES = {"m0": 15.0, "m1": 45.0, "m2": 90.0, "idle": 0.0}
QUICK = ["--duration-s", "3", "--warmup-s", "0.5", "--max-windows", "3"]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from inferpack.repository.init import init_repository

    root = tmp_path_factory.mktemp("demand-repo")
    init_repository(root, ["tiny-mlp"], seed=0)
    for name in RATES:
        edit_model(root, "tiny-mlp", name)
    thread = ServerThread(ServerConfig(str(root), http_port=0, grpc_port=None)).start()
    yield thread
    thread.stop()


def _demand(tmp_path: Path) -> Path:
    path = tmp_path / "demand.csv"
    rows = [f"{model},tiny-mlp,{rps:g}" for model, rps in RATES.items()]
    path.write_text("model,kind,rps\n" + "\n".join(rows) + "\n")
    return path


def _loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from inferpack.cli import main; main()", "loadtest", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _run(target: ServerThread, tmp_path: Path, scale: float) -> dict[str, Any]:
    output = tmp_path / f"demand-{scale:g}.json"
    done = _loadtest("--url", target.url, "--demand", str(_demand(tmp_path)),
                     "--rate-scale", f"{scale:g}", "--output", str(output), *QUICK)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [level] = json.loads(output.read_text())["levels"]
    assert level["errors"] == {}
    return dict(level)


def test_each_model_gets_its_share_and_the_scale_scales_the_total(
    target: ServerThread, tmp_path: Path
) -> None:
    total = sum(RATES.values())
    single, double = _run(target, tmp_path, 1.0), _run(target, tmp_path, 2.0)
    assert single["rate_rps"] == pytest.approx(total)
    assert double["rate_rps"] == pytest.approx(2 * total)
    for level in (single, double):
        counts = {m: level["per_model"].get(m, {}).get("requests", 0) for m in RATES}
        requests = sum(counts.values())
        assert requests == level["requests"] > 300
        assert counts["idle"] == 0
        for model in ("m0", "m1", "m2"):
            share = RATES[model] / total
            # Multinomial counts: 5 standard deviations either side of the expected count.
            tolerance = 5 * (requests * share * (1 - share)) ** 0.5
            assert abs(counts[model] - requests * share) <= tolerance, (model, counts)
            stats = level["per_model"][model]
            assert stats["p90_ms"] > 0 and stats["errors"] == 0
            assert stats["achieved_rps"] == pytest.approx(
                level["throughput_rps"] * counts[model] / requests, rel=0.05, abs=0.5
            )
    # Poisson totals over 3 s: 450 and 900 requests expected, a few % of noise each.
    assert double["throughput_rps"] / single["throughput_rps"] == pytest.approx(2.0, rel=0.2)
    assert single["throughput_rps"] == pytest.approx(total, rel=0.2)


@pytest.mark.parametrize(
    "extra",
    [
        ["--model", "m0"],
        ["--rate-rps", "10"],
        ["--concurrency", "2"],
        ["--distribution", "uniform"],
    ],
)
def test_demand_excludes_the_other_load_options(
    target: ServerThread, tmp_path: Path, extra: list[str]
) -> None:
    output = tmp_path / "x.json"
    done = _loadtest("--url", target.url, "--demand", str(_demand(tmp_path)),
                     "--output", str(output), *extra)  # fmt: skip
    assert done.returncode == 2 and "--demand sets the models" in done.stderr
    assert not output.exists()


def test_a_bad_demand_or_scale_is_a_clear_error(target: ServerThread, tmp_path: Path) -> None:
    output = tmp_path / "x.json"
    done = _loadtest("--url", target.url, "--demand", str(_demand(tmp_path)),
                     "--rate-scale", "0", "--output", str(output))  # fmt: skip
    assert done.returncode == 2 and "rate scale must be > 0" in done.stderr
    broken = tmp_path / "broken.csv"
    broken.write_text("model,kind,rps\nm0,tiny-mlp,fast\n")
    done = _loadtest("--url", target.url, "--demand", str(broken), "--output", str(output))
    assert done.returncode == 2 and "not a number" in done.stderr
