"""Weight sharing (issue [5a]): memory and load time of many models that share weights.

(a) ``backbone``: N SqueezeNet 1.1 models with equal ``features`` (seed 0, 2.9 MB) and a
    classifier of their own each (a 512 -> 1000 convolution, 2.05 MB): the server's RSS
    growth once all N are loaded, against one backbone + N heads (target <= 1.2x).
(b) ``copies``: N copies of one model (bert-base with the ``text`` extra, else resnet50),
    each its own model folder whose artifact is a hard link to one file: RSS growth
    against one copy's weights (target <= 2x), and time to load.
Plus what a first load pays to find shared weights: hashing throughput, SHA-256 vs BLAKE2b.

Method: one server subprocess per part (``--model-control-mode explicit``); a tiny model is
loaded first so that torch and the worker pools are in the baseline RSS; then every model
is loaded over ``POST /v2/repository/models/{m}/load``, ``LOADERS`` at a time; RSS is the
server's VmRSS.

    python -m benchmarks.shared_weights [--heads 1000] [--copies 3000] [--copy-model auto]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import numpy as np
import yaml

from benchmarks.common import served, write_result
from benchmarks.many_models import server_rss_mb

LOADERS = 4  # concurrent load requests: the server loads on 2 loader threads
MB = 2**20


def _write_model(root: Path, name: str, config: dict[str, object]) -> Path:
    folder = root / name / "1"
    folder.mkdir(parents=True)
    (root / name / "model.yaml").write_text(yaml.safe_dump({**config, "name": name}))
    return folder / "model.safetensors"


def _base(root: Path, workload: str) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """The workload's model.yaml (as a dict) and its seed-0 weights as numpy arrays."""
    from inferpack.config.model_config import model_config_to_dict
    from inferpack.repository.init import init_repository
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import build_seeded

    init_repository(root, ["tiny-mlp"])  # the baseline model
    spec = get_workload(workload)
    config = model_config_to_dict(spec.default_config(workload))
    weights = {k: v.numpy() for k, v in build_seeded(spec, {"seed": 0}).state_dict().items()}
    return config, weights


def build_backbone_repository(root: Path, heads: int) -> dict[str, int]:
    """``heads`` SqueezeNets sharing ``features`` (keys ``0.*``), each with its own
    classifier (``1.*``) drawn from its index; the bytes of one backbone and one head."""
    from safetensors.numpy import save_file

    config, weights = _base(root, "squeezenet")
    head_keys = [k for k in weights if k.startswith("1.")]
    rng = np.random.default_rng(0)
    for index in range(heads):
        own = {
            k: (rng.standard_normal(weights[k].shape) * 0.01).astype(np.float32) for k in head_keys
        }
        save_file({**weights, **own}, str(_write_model(root, f"net-{index:04d}", config)))
    head = sum(weights[k].nbytes for k in head_keys)
    return {"backbone_bytes": sum(v.nbytes for v in weights.values()) - head, "head_bytes": head}


def build_copies_repository(root: Path, copies: int, workload: str) -> int:
    """``copies`` model folders of ``workload`` whose artifacts are hard links to one file;
    the bytes of its weights."""
    from safetensors.numpy import save_file

    config, weights = _base(root, workload)
    original = root / "artifact.safetensors"
    save_file(weights, str(original))
    for index in range(copies):
        os.link(original, _write_model(root, f"copy-{index:04d}", config))
    return sum(v.nbytes for v in weights.values())


async def load_all(url: str, names: list[str]) -> list[float]:
    """Load every model, LOADERS requests at a time; seconds per load."""
    pending = list(reversed(names))
    seconds: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def loader() -> None:
            while pending:
                name = pending.pop()
                started = time.perf_counter()
                async with session.post(f"{url}/v2/repository/models/{name}/load") as response:
                    assert response.status == 200, await response.text()
                seconds.append(time.perf_counter() - started)

        await asyncio.gather(*(loader() for _ in range(LOADERS)))
    return seconds


async def index_rows(url: str) -> list[dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v2/repository/index", json={"ready": True}) as response,
    ):
        rows: list[dict[str, object]] = await response.json()
    return rows


def measure(root: Path, names: list[str], first: int) -> dict[str, object]:
    """Baseline RSS (tiny model loaded), RSS after the ``first`` models, after all; times."""
    extra = ["--model-control-mode", "explicit"]
    with served(root, extra_args=extra) as url:
        asyncio.run(load_all(url, ["tiny-mlp"]))
        baseline_mb = server_rss_mb(url)
        started = time.perf_counter()
        first_s = asyncio.run(load_all(url, names[:first]))
        first_mb = server_rss_mb(url)
        rest_s = asyncio.run(load_all(url, names[first:]))
        total_s = time.perf_counter() - started
        all_mb = server_rss_mb(url)
        rows = [r for r in asyncio.run(index_rows(url)) if r["name"] != "tiny-mlp"]
    loads = np.asarray(first_s + rest_s)
    return {
        "models": len(names),
        "load_all_s": round(total_s, 1),
        "load_s": {
            "first": round(first_s[0], 3),
            "p50": round(float(np.median(loads)), 3),
            "p99": round(float(np.percentile(loads, 99)), 3),
        },
        "server_rss_baseline_mb": round(baseline_mb, 1),
        f"server_rss_after_{first}_mb": round(first_mb, 1),
        "server_rss_after_all_mb": round(all_mb, 1),
        "rss_growth_mb": round(all_mb - baseline_mb, 1),
        "index_own_mb": round(sum(int(str(r["own_bytes"])) for r in rows) / MB, 1),
        "index_shared_mb_per_model": round(
            float(np.median([int(str(r["shared_bytes"])) for r in rows])) / MB, 2
        ),
        "index_memory_mb_per_model": round(
            float(np.median([int(str(r["memory_bytes"])) for r in rows])) / MB, 2
        ),
    }


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in os.environ (inherited by server subprocesses), then restored."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def backbone_run(heads: int) -> dict[str, object]:
    """Measured twice: with glibc malloc as it comes, and with its mmap threshold fixed at
    128 KiB (allocations above it get their own mappings, returned to the OS when freed),
    to tell heap fragmentation (freed backbones, warm-up activations) from what is held."""
    root = Path(tempfile.mkdtemp(prefix="inferpack-shared-"))
    names = [f"net-{i:04d}" for i in range(heads)]
    try:
        started = time.perf_counter()
        sizes = build_backbone_repository(root, heads)
        build_s = time.perf_counter() - started
        runs = {"default_malloc": measure(root, names, first=1)}
        with environment({"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}):
            runs["malloc_mmap_threshold_128k"] = measure(root, names, first=1)
    finally:
        shutil.rmtree(root)
    ideal_mb = (sizes["backbone_bytes"] + heads * sizes["head_bytes"]) / MB
    unshared_mb = heads * (sizes["backbone_bytes"] + sizes["head_bytes"]) / MB
    for run in runs.values():
        run["rss_growth_over_ideal"] = round(float(str(run["rss_growth_mb"])) / ideal_mb, 3)
    return {
        "workload": "squeezenet 1.1, features shared (seed 0), classifier conv per model",
        "repository_build_s": round(build_s, 1),
        "backbone_mb": round(sizes["backbone_bytes"] / MB, 2),
        "head_mb": round(sizes["head_bytes"] / MB, 2),
        "one_backbone_plus_heads_mb": round(ideal_mb, 1),
        "unshared_weights_mb": round(unshared_mb, 1),
        "target": "rss_growth_over_ideal <= 1.2",
        **runs,
    }


def copies_run(copies: int, workload: str) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="inferpack-copies-"))
    try:
        one = build_copies_repository(root, copies, workload)
        result = measure(root, [f"copy-{i:04d}" for i in range(copies)], first=1)
    finally:
        shutil.rmtree(root)
    growth = float(str(result["rss_growth_mb"]))
    return {
        "workload": workload,
        "copies": "model folders whose artifacts are hard links to one safetensors file",
        "one_copy_weights_mb": round(one / MB, 1),
        **result,
        "rss_growth_over_one_copy": round(growth * MB / one, 3),
        "target": "rss_growth_over_one_copy <= 2",
    }


def hashing(size_mb: int = 256) -> dict[str, float]:
    """GB/s of each candidate content hash over one buffer (best of 3)."""
    data = memoryview(np.random.default_rng(0).bytes(size_mb * MB))
    result = {}
    for name, make in (
        ("sha256", hashlib.sha256),
        ("blake2b_128", lambda: hashlib.blake2b(digest_size=16)),
    ):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            make().update(data)
            times.append(time.perf_counter() - started)
        result[f"{name}_gb_per_s"] = round(size_mb * MB / min(times) / 1e9, 2)
    return result


def copy_workload(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "resnet50"
    return "bert-base"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=3000)
    parser.add_argument("--copy-model", default="auto", help="bert-base, resnet50 or auto")
    parser.add_argument("--parts", default="hash,backbone,copies")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    result: dict[str, object] = {
        "method": "server subprocess, --model-control-mode explicit; RSS growth = VmRSS "
        "after loading the models minus VmRSS with one tiny model loaded; "
        f"{LOADERS} load requests in flight.",
    }
    if "hash" in parts:
        result["hashing"] = hashing()
    if "backbone" in parts:
        result["backbone"] = backbone_run(args.heads)
    if "copies" in parts:
        result["copies"] = copies_run(args.copies, copy_workload(args.copy_model))
    print(write_result("shared_weights.json", result).read_text())


if __name__ == "__main__":
    main()
