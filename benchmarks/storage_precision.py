"""bf16 weights computed in fp32 (model.yaml ``storage_precision``), two ways (issue [5a]).

* ``fp32``: the model as it is (baseline).
* ``bf16-widen-on-read``: what inferpack does (``backends/storage_precision.py``): each
  weight is stored in bf16 and widened to fp32 when its layer reads it.
* ``bf16-parametrize``: the same through ``torch.nn.utils.parametrize`` (a module per
  tensor, a class per module instance).
* ``bf16-functional-call``: all weights widened once per batch and passed to
  ``torch.func.functional_call`` (a full fp32 copy exists while a batch runs).

Each variant in a bare process: resident bytes after load (RSS delta, after malloc_trim) and
the peak RSS above that while running batches (VmHWM reset through /proc/self/clear_refs).
Latency per batch (median of ``--runs``) in one more process that interleaves the variants.

    python -m benchmarks.storage_precision [--model resnet50] [--runs 10]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import write_result

VARIANTS = ("fp32", "bf16-widen-on-read", "bf16-parametrize", "bf16-functional-call")
BATCH_SIZES = (1, 8)


def _settled_bytes() -> int:
    """RSS once freed heap memory is handed back (the fp32 weights a load replaced)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _status_bytes("VmRSS")


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _forward(variant: str, model: str) -> Callable[[Any], Any]:
    """The variant's model as a function of one input batch."""
    import torch

    from inferpack.backends.storage_precision import keep_narrow
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import build_seeded

    module = build_seeded(get_workload(model), {"seed": 0})
    if variant == "bf16-widen-on-read":
        return keep_narrow(module, torch.bfloat16, torch.float32)
    if variant == "fp32":
        return module
    if variant == "bf16-parametrize":
        return _parametrized(module)
    module.to(torch.bfloat16)
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}

    def forward(batch: Any) -> Any:
        widened = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        return torch.func.functional_call(module, widened, (batch,))

    return forward


def _parametrized(module: Any) -> Any:
    import torch
    from torch.nn.utils import parametrize

    class Widen(torch.nn.Module):
        def forward(self, stored: torch.Tensor) -> torch.Tensor:
            return stored.float()

    for sub in list(module.modules()):
        for name, tensor in [*sub._parameters.items(), *sub._buffers.items()]:
            if tensor is not None and tensor.dtype == torch.float32:
                with torch.no_grad():
                    tensor.data = tensor.data.to(torch.bfloat16)
                parametrize.register_parametrization(sub, name, Widen(), unsafe=True)
    return module


def _batches(model: str) -> dict[int, Any]:
    import torch

    from inferpack.workloads import example_inputs, get_workload

    spec = get_workload(model)
    return {
        batch: torch.from_numpy(next(iter(example_inputs(spec.inputs, batch).values())))
        for batch in BATCH_SIZES
    }


def memory_child(variant: str, model: str, runs: int) -> dict[str, float]:
    """Resident MB after load; peak MB above that over ``runs`` batches of each size."""
    import torch

    batches = _batches(model)
    before = _settled_bytes()
    forward = _forward(variant, model)
    resident = _settled_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    with torch.inference_mode():
        for tensor in batches.values():
            for _ in range(runs):
                forward(tensor)
    return {
        "resident_mb": round((resident - before) / 2**20, 1),
        "peak_above_resident_mb": round((_status_bytes("VmHWM") - resident) / 2**20, 1),
    }


def latency_child(model: str, runs: int) -> dict[str, Any]:
    """Median ms per batch of every variant, the variants' runs interleaved so that load
    from elsewhere on the machine falls on all of them alike; and the median ms of widening
    every bf16 weight once (what widen-on-read adds to a batch, less what overlaps)."""
    import torch

    batches = _batches(model)
    forwards = {variant: _forward(variant, model) for variant in VARIANTS}
    times: dict[tuple[str, int], list[float]] = {}
    with torch.inference_mode():
        for batch, tensor in batches.items():
            for forward in forwards.values():
                forward(tensor)  # warm-up
            for _ in range(runs):
                for variant, forward in forwards.items():
                    start = time.perf_counter()
                    forward(tensor)
                    elapsed_ms = (time.perf_counter() - start) * 1e3
                    times.setdefault((variant, batch), []).append(elapsed_ms)
    latency = {
        variant: {
            f"batch_{batch}_p50_ms": round(statistics.median(times[variant, batch]), 2)
            for batch in batches
        }
        for variant in VARIANTS
    }
    return {"variants": latency, "widen_all_weights_ms": _widen_ms(model, runs)}


def _widen_ms(model: str, runs: int) -> float:
    import torch

    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import build_seeded

    module = build_seeded(get_workload(model), {"seed": 0}).to(torch.bfloat16)
    weights = [t for t in module.state_dict().values() if t.is_floating_point()]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        widened = [t.float() for t in weights]
        times.append((time.perf_counter() - start) * 1e3)
        del widened
    return round(statistics.median(times), 2)


def _child_json(*args: str) -> Any:
    command = [sys.executable, "-m", "benchmarks.storage_precision", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args}: child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=[*VARIANTS, "latency"])
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        if args.child == "latency":
            print(json.dumps(latency_child(args.model, args.runs)))
        else:
            print(json.dumps(memory_child(args.child, args.model, args.runs)))
        return
    common = ["--model", args.model, "--runs", str(args.runs), "--threads", str(args.threads)]
    results = {variant: _child_json("--child", variant, *common) for variant in VARIANTS}
    timing = _child_json("--child", "latency", *common)
    for variant, latency in timing["variants"].items():
        results[variant]["latency_ms"] = latency
        print(variant, results[variant], flush=True)
    print("widen_all_weights_ms", timing["widen_all_weights_ms"])
    out = write_result(
        "storage_precision.json",
        {
            "model": args.model,
            "threads": args.threads,
            "runs": args.runs,
            "widen_all_weights_ms": timing["widen_all_weights_ms"],
            "variants": results,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
