"""Resident memory per model by artifact format (issue [5a]).

The same workload (default small-cnn) written as workload + safetensors (eager),
TorchScript traced / scripted / frozen and torch.export, plus eager and torch.export with
``storage_precision: bf16``. For each format a bare process loads one copy (paying the
one-time costs: libraries, JIT and export machinery), then ``--copies`` more with distinct
seeds (nothing shareable) through the server's load path (``TorchBackend``: load, warm-up,
then two requests of one row each); the RSS delta over those copies, divided by their
number, is the memory a model costs. ``memory_bytes`` (what the LRU budget counts) is
reported beside it: the rest is the format's own overhead (graphs, code, allocator), and
``x_counted`` is the ratio of the two (issue [5a]: at most 1.10). With ``--churn N`` the
same process then unloads them all and loads/unloads a model N times (the LRU's churn):
``churn_rss_growth_bytes`` is the RSS growth over the second half of those cycles, which
must stay near 0 (nothing left behind per load).

``--formats`` measures some formats only; their figures replace those in the model's
result file, each format stamped with the machine and time it was measured on.

    python -m benchmarks.format_memory [--model small-cnn] [--copies 200]
        [--formats torch_export,workload] [--churn 200]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, machine, write_result

# format -> (platform, extra model.yaml fields)
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "workload": ("workload", {}),
    "workload-bf16-storage": ("workload", {"storage_precision": "bf16"}),
    "torchscript-traced": ("torchscript", {}),
    "torchscript-scripted": ("torchscript", {}),
    "torchscript-frozen": ("torchscript", {}),
    "torch_export": ("torch_export", {}),
    "torch_export-bf16-storage": ("torch_export", {"storage_precision": "bf16"}),
}
ARTIFACT = {"workload": "model.safetensors", "torchscript": "model.pt", "torch_export": "model.pt2"}


def _writers(model: str, kinds: set[str]) -> dict[str, Callable[[Any, Path], None]]:
    """Per artifact kind: write a seeded module's artifact to a path."""
    import torch
    from torch.export import Dim

    from inferpack.workloads import example_inputs, get_workload
    from inferpack.workloads.weights import build_seeded, save_weights

    spec = get_workload(model)
    example = tuple(torch.from_numpy(a) for a in example_inputs(spec.inputs, 2).values())
    dims = tuple({0: Dim("batch", min=1, max=spec.max_batch_size)} for _ in example)
    # One export, its weights replaced per seed: same graph, distinct weights.
    program = None
    if "torch_export" in kinds:
        program = torch.export.export(build_seeded(spec, {}), example, dynamic_shapes=dims)

    def export(module: Any, path: Path) -> None:
        assert program is not None
        with torch.no_grad():
            for name, value in module.state_dict().items():
                program.state_dict[name].copy_(value)
        torch.export.save(program, str(path))

    writers: dict[str, Callable[[Any, Path], None]] = {
        "workload": save_weights,
        "torchscript-traced": lambda m, p: torch.jit.trace(m, example).save(str(p)),
        "torchscript-scripted": lambda m, p: torch.jit.script(m).save(str(p)),
        "torchscript-frozen": lambda m, p: torch.jit.freeze(torch.jit.script(m)).save(str(p)),
        "torch_export": export,
    }
    return {kind: write for kind, write in writers.items() if kind in kinds}


def _kind(fmt: str) -> str:
    """The artifact kind a format loads: ``torch_export-bf16-storage`` -> torch_export."""
    return fmt.removesuffix("-bf16-storage")


def write_artifacts(folder: Path, model: str, copies: int, formats: list[str]) -> None:
    """``folder/<kind>/<seed>/<artifact>`` for seeds 0..copies (one more: the first load)."""
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import build_seeded

    spec = get_workload(model)
    writers = _writers(model, {_kind(fmt) for fmt in formats})
    for seed in range(copies + 1):
        module = build_seeded(spec, {"seed": seed})
        for kind, write in writers.items():
            platform = "workload" if kind == "workload" else kind.split("-")[0]
            target = folder / kind / str(seed)
            target.mkdir(parents=True)
            write(module, target / ARTIFACT[platform])


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _source(folder: Path, model: str, fmt: str, seed: int) -> Any:
    from inferpack.config import parse_model_config
    from inferpack.config.model_config import model_config_to_dict
    from inferpack.repository import ModelSource
    from inferpack.workloads import get_workload

    platform, extra = FORMATS[fmt]
    raw = model_config_to_dict(get_workload(model).default_config(f"m{seed}", seed=seed))
    raw.update(platform=platform, instances={"count": 1, "device": "cpu"}, **extra)
    if platform != "workload":
        del raw["workload"], raw["workload_options"]
    kind = fmt.removesuffix("-bf16-storage")
    path = folder / kind / str(seed) / ARTIFACT[platform]
    return ModelSource(parse_model_config(raw, str(path)), "1", path)


def child(folder: Path, model: str, fmt: str, copies: int, churn: int = 0) -> dict[str, float]:
    """Runs in a bare process: load ``copies`` + 1 models of ``fmt``; per-model figures;
    then, with ``churn``, that many load/unload cycles (see the module docstring)."""
    import torch

    from inferpack.backends.torch_backend import TorchBackend
    from inferpack.workloads import example_inputs

    torch.set_num_threads(1)

    def load(seed: int) -> tuple[Any, float]:
        source = _source(folder, model, fmt, seed)
        inputs = example_inputs(source.config.inputs, 1, seed)
        start = time.perf_counter()
        (backend,) = TorchBackend.load_instances(source)
        backend.warm_up({k: v * 0 for k, v in inputs.items()})
        load_ms = (time.perf_counter() - start) * 1e3
        for _ in range(2):
            backend.run(inputs)
        return backend, load_ms

    first = load(0)
    gc.collect()
    before = _rss_bytes()
    loaded = [load(seed) for seed in range(1, copies + 1)]
    gc.collect()
    after = _rss_bytes()
    assert first[0].memory_bytes > 0  # kept loaded until measured
    figures = {
        "rss_per_model_bytes": (after - before) / copies,
        "memory_bytes": statistics.mean(b.memory_bytes for b, _ in loaded),
        "load_ms_p50": statistics.median(ms for _, ms in loaded),
    }
    if churn:
        for backend, _ in loaded:
            backend.close()
        del loaded
        middle = 0
        for cycle in range(churn):
            backend, _ = load(1 + cycle % copies)
            backend.close()
            del backend
            if cycle + 1 == churn // 2:
                gc.collect()
                middle = _rss_bytes()
        gc.collect()
        figures["churn_cycles"] = churn
        figures["churn_rss_growth_bytes"] = _rss_bytes() - middle
    return figures


def run(model: str, copies: int, formats: list[str], churn: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="format-memory-") as tmp:
        folder = Path(tmp)
        write_artifacts(folder, model, copies, formats)
        for fmt in formats:
            command = [sys.executable, "-m", "benchmarks.format_memory", "--child", fmt]
            command += ["--folder", tmp, "--model", model, "--copies", str(copies)]
            command += ["--churn", str(churn)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{fmt}: child failed:\n{done.stderr[-4000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            kind = fmt.removesuffix("-bf16-storage")
            artifact = next((folder / kind / "1").iterdir())
            figures["artifact_bytes"] = artifact.stat().st_size
            figures["overhead_bytes"] = figures["rss_per_model_bytes"] - figures["memory_bytes"]
            ratio = round(figures["rss_per_model_bytes"] / figures["memory_bytes"], 3)
            results[fmt] = {k: round(v) for k, v in figures.items()} | {"x_counted": ratio}
            print(fmt, results[fmt], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated")
    parser.add_argument("--churn", type=int, default=0, help="load/unload cycles after")
    parser.add_argument("--child", choices=sorted(FORMATS))
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.folder, args.model, args.child, args.copies, args.churn)))
        return
    chosen = [fmt for fmt in args.formats.split(",") if fmt]
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown:
        parser.error(f"unknown formats {unknown}; known: {sorted(FORMATS)}")
    formats = run(args.model, args.copies, chosen, args.churn)
    name = f"format_memory_{args.model}.json" if args.model != "small-cnn" else "format_memory.json"
    method = "bare process per format; RSS delta over --copies loads (warm-up + 2 requests)"
    result: dict[str, Any] = {"model": args.model, "method": method, "formats": formats}
    previous = ROOT / "benchmarks" / "results" / name
    if set(chosen) != set(FORMATS) and previous.exists():
        # A partial run: keep the other formats' figures, each stamped where it was taken.
        old = json.loads(previous.read_text())
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        stamp = {"machine": machine(), "measured_at": when}
        for figures in formats.values():
            figures.update(copies=args.copies, **stamp)
        result["formats"] = {**old.get("formats", {}), **formats}
        result["copies"] = old.get("copies", args.copies)
        result["note"] = "formats with their own machine/measured_at were re-run alone"
    else:
        result["copies"] = args.copies
    out = write_result(name, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
