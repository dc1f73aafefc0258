"""Soak: an LRU server under steady churn for ten minutes (issue [5]).

48 distinct small-cnn models (seeds 0..47) behind ``inferpack serve --model-control-mode
lru`` with a budget that holds about a quarter of them, so most requests under uniform
access find their model evicted and load it again. First a short closed-loop run at
concurrency 8 measures what the server sustains with that churn; then ``inferpack
loadtest`` drives an open-loop Poisson rate at 70 % of it for ``--duration-s`` (uniform
over the models, HTTP binary), while the server's RSS is sampled every few seconds.

Pass: zero errors, RSS at the end within 5 % of RSS after the warm-up.

    python -m benchmarks.soak_lru [--models 48] [--duration-s 600]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import loadtest_level, served, write_result
from benchmarks.many_models import build_repository, server_rss_mb

RESIDENT_FRACTION = 0.25
LOAD_FRACTION = 0.7
CAPACITY_CONCURRENCY = 8
RSS_SAMPLE_S = 5.0
WARMUP_S = 30.0


def _loadtest(url: str, repo: Path, load: list[str], duration_s: float) -> dict[str, Any]:
    arguments = [
        "--models-from-repository",
        str(repo),
        "--distribution",
        "uniform",
        *load,
        "--duration-s",
        str(duration_s),
        "--warmup-s",
        str(WARMUP_S if duration_s > 60 else 2),
        "--max-windows",
        "3",
    ]
    return loadtest_level(url, arguments, duration_s * 2 + 300)


def _index_bytes(url: str) -> int:
    request = urllib.request.Request(f"{url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        rows = json.loads(reply.read())
    sizes = [int(row["memory_bytes"]) for row in rows if "memory_bytes" in row]
    return max(sizes)


def _per_model_bytes(repo: Path) -> int:
    """One model's measured memory, read from a server that loads it."""
    with served(repo, extra_args=["--model-control-mode", "explicit"]) as url:
        urllib.request.urlopen(
            urllib.request.Request(
                f"{url}/v2/repository/models/cnn-0000/load", data=b"", method="POST"
            ),
            timeout=60,
        ).read()
        return _index_bytes(url)


def _sample_rss(url: str, samples: list[tuple[float, float]], stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(RSS_SAMPLE_S):
        samples.append((round(time.monotonic() - started, 1), round(server_rss_mb(url), 2)))


def soak(models: int, duration_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        build_repository(repo, models)
        per_model = _per_model_bytes(repo)
        budget_mb = per_model * models * RESIDENT_FRACTION / 2**20
        extra = ["--model-control-mode", "lru", "--memory-budget-mb", f"{budget_mb:.4f}"]
        with served(repo, extra_args=extra) as url:
            capacity = _loadtest(
                url,
                repo,
                ["--concurrency", str(CAPACITY_CONCURRENCY)],
                15,
            )
            rate = round(capacity["throughput_rps"] * LOAD_FRACTION, 1)
            samples: list[tuple[float, float]] = []
            stop = threading.Event()
            sampler = threading.Thread(target=_sample_rss, args=(url, samples, stop), daemon=True)
            sampler.start()
            try:
                level = _loadtest(url, repo, ["--rate-rps", str(rate)], duration_s)
            finally:
                stop.set()
                sampler.join()
            with urllib.request.urlopen(f"{url}/metrics", timeout=30) as reply:
                metrics = reply.read().decode()
    after_warmup = [rss for t, rss in samples if t >= WARMUP_S + 5]
    baseline, final = after_warmup[0], after_warmup[-1]
    growth = (final - baseline) / baseline
    evictions = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("inferpack_model_evictions_total")
    )
    errors = sum(level["errors"].values()) if level["errors"] else 0
    return {
        "models": models,
        "per_model_bytes": per_model,
        "memory_budget_mb": round(budget_mb, 3),
        "capacity_closed_loop": capacity,
        "rate_rps": rate,
        "soak": level,
        "evictions": evictions,
        "rss_mb": {"after_warmup": baseline, "final": final, "max": max(after_warmup)},
        "rss_growth": round(growth, 4),
        "rss_samples": samples,
        "errors": errors,
        "passed": errors == 0 and growth < 0.05,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=48)
    parser.add_argument("--duration-s", type=float, default=600.0)
    args = parser.parse_args()
    result = soak(args.models, args.duration_s)
    path = write_result("soak_lru.json", result)
    summary = {k: result[k] for k in ("rate_rps", "evictions", "rss_mb", "rss_growth", "errors")}
    print(json.dumps(summary, indent=1), f"\nwrote {path}")


if __name__ == "__main__":
    main()
