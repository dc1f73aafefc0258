"""Compiled models served: every `inferpack compile` mode answers tritonclient like eager.

    repo init MODEL; inferpack compile --mode onnx | export | inductor (buckets 1,4,8)
    inferpack serve the repository (eager and the three compiled copies side by side)
    tritonclient.http: batches of 1 and 5 rows (5 runs padded in bucket 8) and gRPC 3 rows
    compare each compiled answer with the eager model's served answer

Every step is the CLI, as a user runs it. Writes benchmarks/results/compile_served.json.

    python -m benchmarks.compile_served [--models small-cnn,resnet50]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_result
from inferpack.repository.init import init_repository

MODES = ("onnx", "export", "inductor")
BUCKETS = "1,4,8"
ROWS = (1, 5)
_LISTENING = re.compile(r"listening\s+on\s+(http://\S+?),\s+gRPC\s+on\s+(\S+?)\s")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from inferpack.cli import main; main()", *args]


def compile_all(repo: Path, model: str) -> dict[str, Any]:
    compiled = {}
    for mode in MODES:
        began = time.perf_counter()
        command = cli(
            "compile", "--model-repository", str(repo), "--model", model,
            "--mode", mode, "--batch-buckets", BUCKETS,
        )  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
        if done.returncode:
            raise RuntimeError(f"compile {model} {mode} failed:\n{done.stderr}")
        name = f"{model}-{mode}-fp32"
        report = json.loads((repo / name / "1" / "accuracy.json").read_text())
        compiled[name] = {
            "mode": mode,
            "command_s": round(time.perf_counter() - began, 1),
            "within_tolerance": report["within_tolerance"],
            "accuracy": report["overall"],
        }
        print(f"{name}: compiled in {compiled[name]['command_s']} s", flush=True)
    return compiled


def ask(url: str, grpc_address: str, model: str, spec: dict[str, Any]) -> dict[int, np.ndarray]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    rng = np.random.default_rng(0)
    shape = spec["inputs"][0]["shape"][1:]
    name, output = spec["inputs"][0]["name"], spec["outputs"][0]["name"]
    answers = {}
    client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=600)
    for rows in ROWS:
        data = rng.standard_normal((rows, *shape)).astype(np.float32)
        tensor = httpclient.InferInput(name, list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        answers[rows] = client.infer(model, [tensor]).as_numpy(output)
    client.close()
    data = rng.standard_normal((3, *shape)).astype(np.float32)
    channel = grpcclient.InferenceServerClient(grpc_address)
    tensor = grpcclient.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    answers[3] = channel.infer(model, [tensor], client_timeout=600).as_numpy(output)
    channel.close()
    return answers


def serve_and_compare(repo: Path, model: str, compiled: dict[str, Any], log: Path) -> None:
    import tritonclient.http as httpclient

    with log.open("w") as sink:
        process = subprocess.Popen(
            cli("serve", "--model-repository", str(repo), "--http-port", "0", "--grpc-port", "0"),
            stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 3600
        found = None
        while time.monotonic() < deadline and not found:
            found = _LISTENING.search(log.read_text())
            time.sleep(1)
        assert found, log.read_text()
        url, grpc_address = found.group(1), found.group(2)
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        while not all(client.is_model_ready(m) for m in [model, *compiled]):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(2)
        spec = client.get_model_metadata(model)
        client.close()
        reference = ask(url, grpc_address, model, spec)
        for name, row in compiled.items():
            answers = ask(url, grpc_address, name, spec)
            row["served"] = {
                str(rows): {
                    "rows_returned": int(answers[rows].shape[0]),
                    "relative_l2": float(
                        np.linalg.norm(answers[rows] - reference[rows])
                        / np.linalg.norm(reference[rows])
                    ),
                    "max_abs_error": float(np.abs(answers[rows] - reference[rows]).max()),
                }
                for rows in reference
            }
            print(name, row["served"], flush=True)
    finally:
        process.terminate()
        process.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="small-cnn,resnet50")
    args = parser.parse_args()
    results = {}
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="compile-served-") as folder:
            repo = Path(folder) / "repo"
            repo.mkdir()
            init_repository(repo, [model], seed=0)
            compiled = compile_all(repo, model)
            serve_and_compare(repo, model, compiled, Path(folder) / "serve.log")
            results[model] = compiled
    out = write_result("compile_served.json", {"buckets": BUCKETS, "models": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
