"""Many models behind one server (issue [2]): 1,000 distinct small-cnn models (seeds 0..999).

(a) ``--model-control-mode lru`` with a budget that holds about 200 of them, uniform and
    Zipf(1.1) access: cold-load p50/p99, evictions, requests/s, latency p50/p90/p99.
(b) all 1,000 resident (mode none): memory per model (RSS) and latency under uniform access.
Plus where a cold load's time goes, measured in-process phase by phase.

    python -m benchmarks.many_models [--models 1000] [--duration-s 30]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import yaml

from benchmarks.common import binary_body, percentiles_ms, served, write_result

CONCURRENCY = 8
RESIDENT_FRACTION = 0.2


def build_repository(root: Path, count: int) -> None:
    """One small-cnn per seed; model.yaml copied, weights drawn from each seed."""
    from inferpack.repository.init import init_repository
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import build_seeded, save_weights

    init_repository(root, ["small-cnn"], seed=0)
    template = yaml.safe_load((root / "small-cnn" / "model.yaml").read_text())
    spec = get_workload("small-cnn")
    for seed in range(count):
        folder = root / f"cnn-{seed:04d}" / "1"
        folder.mkdir(parents=True)
        config = {**template, "name": f"cnn-{seed:04d}", "workload_options": {"seed": seed}}
        (folder.parent / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        save_weights(build_seeded(spec, {"seed": seed}), folder / "model.safetensors")
    shutil.rmtree(root / "small-cnn")


def cold_load_breakdown(root: Path, count: int = 50) -> dict[str, float]:
    """Median ms per phase of loading one model, in-process."""
    from inferpack.backends import load_backends
    from inferpack.backends.base import warmup_inputs
    from inferpack.repository import LocalRepository
    from inferpack.runtime.metrics import ServingMetrics
    from inferpack.runtime.served_model import ServedModel
    from inferpack.runtime.workers import DevicePools

    repository = LocalRepository(root)
    pools = DevicePools()
    phases: dict[str, list[float]] = {
        "config_and_sources": [],
        "build_and_weights": [],
        "first_batch": [],
        "total": [],
    }
    for index in range(count):
        name = f"cnn-{index:04d}"
        t0 = time.perf_counter()
        [source] = repository.sources(name)
        t1 = time.perf_counter()
        backends = load_backends(source)
        t2 = time.perf_counter()
        model = ServedModel(source, backends, ServingMetrics(), pools)
        model._executors[0].submit(backends[0].warm_up, warmup_inputs(source.config)).result()
        t3 = time.perf_counter()
        phases["config_and_sources"].append(t1 - t0)
        phases["build_and_weights"].append(t2 - t1)
        phases["first_batch"].append(t3 - t2)
        phases["total"].append(t3 - t0)
    return {k: round(float(np.median(v)) * 1e3, 3) for k, v in phases.items()}


def zipf_choices(models: int, exponent: float, size: int, seed: int) -> np.ndarray:
    ranks = np.arange(1, models + 1, dtype=np.float64)
    weights = ranks**-exponent
    return np.random.default_rng(seed).choice(models, size=size, p=weights / weights.sum())


async def drive(url: str, choices: np.ndarray, duration_s: float) -> dict[str, object]:
    """Closed loop at CONCURRENCY; each request goes to the next model in ``choices``."""
    body, headers = binary_body("input", np.zeros((1, 3, 64, 64), np.float32))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cursor = iter(choices.tolist())
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_s
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            while loop.time() < end:
                model = f"cnn-{next(cursor):04d}"
                started = loop.time()
                async with session.post(
                    f"{url}/v2/models/{model}/infer", data=body, headers=headers
                ) as response:
                    await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 200:
                    latencies.append(loop.time() - started)

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return {
        "requests_per_s": round(len(latencies) / duration_s, 1),
        "statuses": {str(k): v for k, v in statuses.items()},
        "latency_ms": percentiles_ms(latencies),
    }


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        return await response.text()


def metric_total(text: str, name: str) -> float:
    pattern = rf"^{name}(?:\{{[^}}]*\}})? (\S+)$"  # labelled or not
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def histogram_quantile(text: str, name: str, q: float) -> float:
    """Quantile over all labels from cumulative buckets (linear inside a bucket)."""
    buckets: dict[float, float] = {}
    for le, value in re.findall(
        rf'^{name}_bucket\{{[^}}]*le="([^"]+)"[^}}]*\}} (\S+)$', text, re.M
    ):
        bound = float("inf") if le == "+Inf" else float(le)
        buckets[bound] = buckets.get(bound, 0.0) + float(value)
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if not total:
        return float("nan")
    target, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= target:
            if bound == float("inf"):
                return lower
            share = (target - below) / max(buckets[bound] - below, 1e-9)
            return lower + share * (bound - lower)
        lower, below = bound, buckets[bound]
    return lower


def server_rss_mb(url: str) -> float:
    """VmRSS of the process listening on the URL's port (the server subprocess)."""
    import subprocess

    port = url.rsplit(":", 1)[1]
    pid = (
        subprocess.run(
            ["sh", "-c", f"ss -ltnp 'sport = :{port}' | grep -o 'pid=[0-9]*' | head -1"],
            capture_output=True,
            text=True,
            check=False,
        )
        .stdout.strip()
        .removeprefix("pid=")
    )
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    threads = re.search(r"Threads:\s+(\d+)", status)
    assert found and threads
    server_rss_mb.threads = int(threads.group(1))  # type: ignore[attr-defined]
    return int(found.group(1)) / 1024


def lru_runs(root: Path, models: int, duration_s: float, per_model_bytes: int) -> dict[str, object]:
    budget_mb = per_model_bytes * models * RESIDENT_FRACTION / 2**20
    results: dict[str, object] = {"memory_budget_mb": round(budget_mb, 3)}
    for name, choices in (
        ("uniform", np.random.default_rng(1).integers(0, models, size=10**6)),
        ("zipf_1.1", zipf_choices(models, 1.1, 10**6, seed=2)),
    ):
        extra = ["--model-control-mode", "lru", "--memory-budget-mb", f"{budget_mb:.4f}"]
        with served(root, extra_args=extra) as url:
            measured = asyncio.run(drive(url, choices, duration_s))
            text = asyncio.run(scrape(url))
            results[name] = {
                **measured,
                # A model's own series are dropped when it is evicted (metrics.forget): every
                # load is either still resident (its series counts it) or was evicted.
                "loads": metric_total(text, "inferpack_model_loads_total")
                + metric_total(text, "inferpack_model_evictions_total"),
                "evictions": metric_total(text, "inferpack_model_evictions_total"),
                "cold_load_ms": {
                    "p50": round(
                        histogram_quantile(text, "inferpack_model_load_duration_seconds", 0.5)
                        * 1e3,
                        1,
                    ),
                    "p99": round(
                        histogram_quantile(text, "inferpack_model_load_duration_seconds", 0.99)
                        * 1e3,
                        1,
                    ),
                },
                "server_rss_mb": round(server_rss_mb(url), 1),
                "server_threads": server_rss_mb.threads,  # type: ignore[attr-defined]
            }
    return results


def resident_run(root: Path, models: int, duration_s: float) -> dict[str, object]:
    """RSS with one model loaded (torch imported, pools started) vs with all resident."""
    body, headers = binary_body("input", np.zeros((1, 3, 64, 64), np.float32))

    async def touch_one(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            url = f"{url}/v2/models/cnn-0000/infer"
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == 200

    with served(root, extra_args=["--model-control-mode", "lru"]) as url:
        asyncio.run(touch_one(url))
        one_mb = server_rss_mb(url)
    started = time.perf_counter()
    with served(root) as url:
        load_all_s = time.perf_counter() - started
        full_mb = server_rss_mb(url)
        threads = server_rss_mb.threads  # type: ignore[attr-defined]
        choices = np.random.default_rng(3).integers(0, models, size=10**6)
        measured = asyncio.run(drive(url, choices, duration_s))
    return {
        **measured,
        "start_and_load_all_s": round(load_all_s, 1),
        "server_rss_one_model_mb": round(one_mb, 1),
        "server_rss_all_resident_mb": round(full_mb, 1),
        "rss_per_model_kb": round((full_mb - one_mb) * 1024 / (models - 1), 1),
        "server_threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--duration-s", type=float, default=30.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="inferpack-many-"))
    try:
        started = time.perf_counter()
        build_repository(root, args.models)
        build_s = time.perf_counter() - started
        from inferpack.backends import load_backends
        from inferpack.repository import LocalRepository

        per_model_bytes = load_backends(LocalRepository(root).sources("cnn-0000")[0])[
            0
        ].memory_bytes
        result = {
            "models": args.models,
            "workload": "small-cnn (3x64x64 -> 10), seeds 0..N-1, CPU",
            "method": f"server subprocess; aiohttp closed loop, {CONCURRENCY} in flight, "
            "binary tensors, each request to the next model of a pre-drawn sequence; "
            "cold-load quantiles interpolated from the server's load-duration histogram "
            "(the resident models' series: an evicted model's are dropped).",
            "repository_build_s": round(build_s, 1),
            "measured_memory_bytes_per_model": per_model_bytes,
            "cold_load_phases_ms": cold_load_breakdown(root),
            "lru": lru_runs(root, args.models, args.duration_s, per_model_bytes),
            "all_resident": resident_run(root, args.models, args.duration_s),
        }
    finally:
        shutil.rmtree(root)
    print(write_result("many_models.json", result).read_text())


if __name__ == "__main__":
    main()
