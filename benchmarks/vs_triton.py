"""inferpack and NVIDIA Triton (PyTriton) side by side, one run ([14] item 4).

The same TorchScript files (small-cnn and tiny-mlp, seed 0, traced and frozen here) are
served by inferpack and by Triton 2.51 through PyTriton 0.7.0, each with dynamic batching
up to 32 rows and a 2 ms queue delay, at several settings each:

  inferpack default      the model.yaml above (one instance), no server flags
  inferpack instances-2  two instances
  triton 1x1             one instance, one torch thread (PyTriton's usual CPU set-up)
  triton 1x2             one instance, torch's default threads (every core)
  triton 2x1             two instances of one torch thread each

Each is driven at concurrency 32 by the project's load generator (`inferpack loadtest`:
HTTP JSON, HTTP binary, gRPC) and by Triton's perf_analyzer (a C++ client: HTTP with
binary tensors, gRPC), one after the other, server and client sharing this host's cores.
The in-process ceiling of the CNN file (inferpack's backend called in a loop, best of
batch 8 and 32, on 1 and on every thread) is measured too. Writes
benchmarks/results/vs_triton.json and a report page, vs_triton.md.

Needs a second venv with nvidia-pytriton and torch (default /tmp/pyt):
    python3 -m venv /tmp/pyt && /tmp/pyt/bin/pip install nvidia-pytriton==0.7.0 torch==2.13.0
    .venv/bin/python -m benchmarks.vs_triton [--pytriton-python /tmp/pyt/bin/python]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import loadtest_level, served, write_result
from benchmarks.json_vs_pytriton import CONCURRENCY, DELAY_US, MAX_BATCH, running_pytriton
from benchmarks.loadtest_pytriton import _free_port
from benchmarks.perf_analyzer import find_perf_analyzer, read_csv
from benchmarks.whole_machine import ceiling

LOADTEST_TIMING = ["--duration-s", "8", "--warmup-s", "2", "--max-windows", "4"]
CLIENTS = (
    "loadtest http-json",
    "loadtest http-binary",
    "loadtest grpc",
    "perf_analyzer http",
    "perf_analyzer grpc",
)


@dataclass(frozen=True)
class Model:
    workload: str
    input_shape: tuple[int, ...]
    output: str
    output_shape: tuple[int, ...]


MODELS = {
    "small-cnn": Model("small-cnn", (3, 64, 64), "logits", (10,)),
    "tiny-mlp": Model("tiny-mlp", (16,), "output", (4,)),
}
# name -> (server, inferpack serve flags or PyTriton arguments, instances)
SETTINGS: dict[str, tuple[str, list[str], int]] = {
    "inferpack default": ("inferpack", [], 1),
    "inferpack instances-2": ("inferpack", [], 2),
    "triton 1x1": ("triton", ["--instances", "1", "--threads", "1"], 1),
    "triton 1x2": ("triton", ["--instances", "1", "--threads", "0"], 1),
    "triton 2x1": ("triton", ["--instances", "2", "--threads", "1"], 2),
}


def build_repository(root: Path, instances: int) -> None:
    """<model>/1/model.pt (the workload traced and frozen) and its model.yaml, per model."""
    import torch

    from inferpack.workloads import get_workload

    for name, model in MODELS.items():
        folder = root / name / "1"
        folder.mkdir(parents=True)
        module = get_workload(model.workload).build({"seed": 0}).eval()
        with torch.no_grad():
            traced = torch.jit.trace(module, torch.zeros(1, *model.input_shape))  # type: ignore[no-untyped-call]
            torch.jit.freeze(traced).save(str(folder / "model.pt"))
        config = {
            "name": name,
            "platform": "torchscript",
            "max_batch_size": MAX_BATCH,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(model.input_shape)}],
            "outputs": [
                {"name": model.output, "datatype": "FP32", "shape": list(model.output_shape)}
            ],
            "dynamic_batching": {"max_queue_delay_us": DELAY_US},
            "instances": {"count": instances, "device": "cpu"},
        }
        (folder.parent / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _loadtest(url: str, model: str, transport: str) -> dict[str, Any]:
    arguments = ["--model", model, "--concurrency", str(CONCURRENCY), *LOADTEST_TIMING]
    if transport == "http-json":
        arguments.append("--no-binary")
    level = loadtest_level(url, arguments, 300)
    return {
        "requests_per_s": level["throughput_rps"],
        "p50_ms": level["latency_ms"]["p50"],
        "p99_ms": level["latency_ms"]["p99"],
        "errors": level["errors"],
        "stable": level["stable"],
    }


def _perf_analyzer(address: str, model: str, protocol: str, folder: Path) -> dict[str, Any]:
    report = folder / "perf.csv"
    find_perf_analyzer().run(
        [
            "-m",
            model,
            "-u",
            address,
            "-i",
            protocol,
            "--concurrency-range",
            str(CONCURRENCY),
            "--measurement-interval",
            "3000",
            "--stability-percentage",
            "50",
            "-f",
            str(report),
        ]
    )
    (row,) = read_csv(report)
    return {
        "requests_per_s": row["Inferences/Second"],
        "p50_ms": row["p50 latency"] / 1e3,
        "p99_ms": row["p99 latency"] / 1e3,
    }


def measure(http: str, grpc: str, model: str, folder: Path) -> dict[str, Any]:
    """Every client against one running server, for one model."""
    return {
        "loadtest http-json": _loadtest(f"http://{http}", model, "http-json"),
        "loadtest http-binary": _loadtest(f"http://{http}", model, "http-binary"),
        "loadtest grpc": _loadtest(f"grpc://{grpc}", model, "grpc"),
        "perf_analyzer http": _perf_analyzer(http, model, "http", folder),
        "perf_analyzer grpc": _perf_analyzer(grpc, model, "grpc", folder),
    }


@contextlib.contextmanager
def running_inferpack(repo: Path) -> Iterator[tuple[str, str]]:
    grpc = _free_port()
    with served(repo, extra_args=["--grpc-port", str(grpc)]) as url:
        yield url.removeprefix("http://"), f"127.0.0.1:{grpc}"


def running_triton(
    python: str, repo: Path, model: str, arguments: list[str]
) -> contextlib.AbstractContextManager[tuple[str, str]]:
    spec = MODELS[model]
    return running_pytriton(
        python,
        repo / model / "1" / "model.pt",
        *("--name", model, "--input", f"input:{','.join(map(str, spec.input_shape))}"),
        *("--output", f"{spec.output}:{','.join(map(str, spec.output_shape))}"),
        *arguments,
    )


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Per model and client: inferpack default / Triton's best setting, and inferpack's
    best / Triton's best."""
    table: dict[str, Any] = {}
    for model, by_setting in results.items():
        table[model] = {}
        for client in CLIENTS:
            rate = {name: rows[client]["requests_per_s"] for name, rows in by_setting.items()}
            triton = max(v for k, v in rate.items() if k.startswith("triton"))
            ours = max(v for k, v in rate.items() if k.startswith("inferpack"))
            table[model][client] = {
                "inferpack_default_over_triton_best": round(rate["inferpack default"] / triton, 3),
                "inferpack_best_over_triton_best": round(ours / triton, 3),
            }
    return table


def report(result: dict[str, Any]) -> str:
    lines = [
        "# inferpack and Triton (PyTriton) side by side",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
        f"measured {result['measured_at']}; `python -m benchmarks.vs_triton`.",
        "",
        "Requests/s at concurrency 32 (p99 ms); dynamic batching up to 32, 2 ms delay.",
        "",
    ]
    for model, by_setting in result["results"].items():
        lines += [
            f"## {model}",
            "",
            "| setting | " + " | ".join(CLIENTS) + " |",
            "| --- |" + " --- |" * len(CLIENTS),
        ]
        for name, rows in by_setting.items():
            cells = [f"{rows[c]['requests_per_s']:,.0f} ({rows[c]['p99_ms']:.1f})" for c in CLIENTS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        ratio = result["ratios"][model]
        cells = [f"{ratio[c]['inferpack_default_over_triton_best']:.2f}" for c in CLIENTS]
        lines += ["| inferpack default / Triton best | " + " | ".join(cells) + " |", ""]
    share = result["cnn_default_binary_over_ceiling"]
    top = result["cnn_ceiling_items_per_s"]
    lines += [
        f"CNN in-process ceiling on every thread: {top:,.0f} images/s; inferpack "
        f"default over binary HTTP (loadtest) = {share:.2f} of it.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pytriton-python", default="/tmp/pyt/bin/python")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {model: {} for model in MODELS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        repos = {count: folder / f"repo{count}" for count in (1, 2)}
        for count, repo in repos.items():
            build_repository(repo, count)
        for name, (server, arguments, instances) in SETTINGS.items():
            for model in MODELS:
                if server == "inferpack":
                    running = running_inferpack(repos[instances])
                else:
                    running = running_triton(args.pytriton_python, repos[1], model, arguments)
                with running as (http, grpc):
                    results[model][name] = measure(http, grpc, model, folder)
                rates = {c: r["requests_per_s"] for c, r in results[model][name].items()}
                print(name, model, rates, flush=True)
        top = ceiling(repos[1], 5.0)
    binary = results["small-cnn"]["inferpack default"]["loadtest http-binary"]["requests_per_s"]
    result: dict[str, Any] = {
        "method": (__doc__ or "").split("\n\n")[1],
        "settings": {
            name: {"server": s, "arguments": a, "instances": i}
            for name, (s, a, i) in SETTINGS.items()
        },
        "results": results,
        "ratios": ratios(results),
        "cnn_ceiling": top,
        "cnn_ceiling_items_per_s": max(row["items_per_s"] for row in top.values()),
    }
    result["cnn_default_binary_over_ceiling"] = round(binary / result["cnn_ceiling_items_per_s"], 3)
    path = write_result("vs_triton.json", result)
    written = json.loads(path.read_text())
    (path.parent / "vs_triton.md").write_text(report(written))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
