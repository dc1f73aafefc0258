"""``inferpack compile`` through the real CLI on tiny repositories from ``repo init``.

onnx end to end (artifact, accuracy.json, cache reuse, served to tritonclient); export
(AOTInductor, slow) and inductor with buckets on tiny-mlp; a deliberately ill-conditioned
model refused at fp16 and accepted with --allow-accuracy-loss; usage errors exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from inferpack.repository.init import init_repository
from tests.integration.cli_server import inferpack, serve

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

TIMEOUT_S = 300


def _compile(repo: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "COLUMNS": "200"}
    command = inferpack("compile", "--model-repository", str(repo), *args)
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    init_repository(root, ["tiny-mlp"], seed=0)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _report(folder: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads((folder / "accuracy.json").read_text())
    return report


def test_onnx_written_checked_cached_and_served(repo: Path, cache: Path, tmp_path: Path) -> None:
    flags = ["--model", "tiny-mlp", "--mode", "onnx", "--target", "cpu", "--precision", "fp32"]
    flags += ["--batch-buckets", "1,4", "--seed", "7", "--version", "3"]
    first = _compile(repo, cache, *flags)
    assert first.returncode == 0, first.stderr
    folder = repo / "tiny-mlp-onnx-fp32" / "3"
    report = _report(folder)
    assert report["within_tolerance"] and not report["cached"]
    assert report["batch_buckets"] == [1, 4] and report["seed"] == 7
    assert report["overall"]["relative_l2"] <= 1e-4  # type: ignore[index]
    assert "load + warm-up" in first.stderr and "relative_l2" in first.stderr
    config = yaml.safe_load((folder.parent / "model.yaml").read_text())
    assert (config["platform"], config["compile"]["batch_buckets"]) == ("onnx", [1, 4])

    second = _compile(repo, cache, *flags[:-2])  # next version: 4
    assert second.returncode == 0, second.stderr
    assert "cached" in second.stderr and _report(folder.parent / "4")["cached"]
    assert (folder.parent / "4" / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()
    # the cache's gain, timed in process (the copy against the export; not two processes'
    # wall time, mostly Python and torch start-up on a busy host)
    assert _report(folder.parent / "4")["compile_s"] < report["compile_s"]  # type: ignore[operator]

    _served_answers_as_eager(repo, tmp_path)


def _served_answers_as_eager(repo: Path, tmp_path: Path) -> None:
    """The compiled model alone in a repository, served and asked through tritonclient."""
    httpclient = pytest.importorskip("tritonclient.http")
    served = tmp_path / "served"
    served.mkdir()
    os.symlink(repo / "tiny-mlp-onnx-fp32", served / "tiny-mlp-onnx-fp32")
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import load_weights

    eager = load_weights(get_workload("tiny-mlp").build({}), repo / "tiny-mlp/1/model.safetensors")
    rows = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    with serve(tmp_path / "serve.log", "--model-repository", str(served),
               "--http-port", "0", "--grpc-port", "-1") as server:  # fmt: skip
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        answer = client.infer("tiny-mlp-onnx-fp32", [tensor]).as_numpy("output")
        client.close()
    with torch.inference_mode():
        expected = eager(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)


def test_export_writes_an_aoti_package(repo: Path, cache: Path) -> None:
    flags = ["--model", "tiny-mlp", "--mode", "export", "--batch-buckets", "1,2"]
    result = _compile(repo, cache, *flags, "--channels-last")
    assert result.returncode == 0, result.stderr
    folder = repo / "tiny-mlp-export-fp32" / "1"
    assert (folder / "model.pt2").is_file()
    report = _report(folder)
    assert report["exporter"] == "torch.export + AOTInductor" and report["within_tolerance"]
    assert yaml.safe_load((folder.parent / "model.yaml").read_text())["platform"] == "torch_aoti"


def test_inductor_compiles_buckets_at_load(repo: Path, cache: Path) -> None:
    result = _compile(repo, cache, "--model", "tiny-mlp", "--mode", "inductor",
                      "--batch-buckets", "1,2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = repo / "tiny-mlp-inductor-fp32" / "1"
    config = yaml.safe_load((folder.parent / "model.yaml").read_text())
    assert config["compile"] == {"mode": "inductor", "batch_buckets": [1, 2]}
    source = repo / "tiny-mlp" / "1" / "model.safetensors"
    assert (folder / "model.safetensors").read_bytes() == source.read_bytes()
    assert [row["batch_size"] for row in _report(folder)["buckets"]] == [1, 2]  # type: ignore[attr-defined]


class _Cancelling(torch.nn.Module):
    """a(x) - b(x), b's weights within 1e-4 of a's: fp16's rounding of each term (~5e-4
    relative) is larger than their difference, so fp16 loses the result."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(16, 4), torch.nn.Linear(16, 4)
        with torch.no_grad():
            self.b.weight.copy_(self.a.weight + 1e-4 * torch.randn_like(self.a.weight))
            self.b.bias.copy_(self.a.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) - self.b(x)


@pytest.fixture
def cancelling_repo(tmp_path: Path) -> Path:
    folder = tmp_path / "repo" / "cancel"
    (folder / "1").mkdir(parents=True)
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(
        _Cancelling().eval(), (torch.randn(2, 16),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, folder / "1" / "model.pt2")
    config = {
        "name": "cancel", "platform": "torch_export", "max_batch_size": 8,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [16]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [4]}],
    }  # fmt: skip
    (folder / "model.yaml").write_text(yaml.safe_dump(config))
    return folder.parent


def test_accuracy_loss_refused_then_allowed(cancelling_repo: Path, cache: Path) -> None:
    flags = ["--model", "cancel", "--precision", "fp16", "--batch-buckets", "1,8"]
    refused = _compile(cancelling_repo, cache, *flags)
    assert refused.returncode == 1, refused.stderr
    assert "relative_l2" in refused.stderr and "<= 0.02" in refused.stderr
    assert sorted(p.name for p in cancelling_repo.iterdir()) == ["cancel"]  # nothing written

    allowed = _compile(cancelling_repo, cache, *flags, "--allow-accuracy-loss")
    assert allowed.returncode == 0, allowed.stderr
    report = _report(cancelling_repo / "cancel-onnx-fp16" / "1")
    assert not report["within_tolerance"] and report["accepted_with_accuracy_loss"]
    assert "relative_l2" in report["violations"][0]  # type: ignore[index]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_target_without_cuda_exits_2(repo: Path, cache: Path) -> None:
    result = _compile(repo, cache, "--model", "tiny-mlp", "--target", "cuda")
    assert result.returncode == 2
    assert "CUDA is not available" in result.stderr


def test_cudagraphs_on_cpu_exits_2_and_writes_nothing(repo: Path, cache: Path) -> None:
    result = _compile(repo, cache, "--model", "tiny-mlp", "--mode", "cudagraphs")
    assert result.returncode == 2
    assert "needs --target cuda" in result.stderr
    assert not (repo / "tiny-mlp-cudagraphs-fp32").exists()
