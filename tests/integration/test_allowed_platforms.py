"""``inferpack serve --allowed-platforms``: an operator refuses platforms whose artifacts are
code. The refused model is UNAVAILABLE with the reason and its artifact is never opened;
the allowed models answer; an unknown platform name is refused at the command line."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from tests.integration.cli_server import inferpack, serve

TINY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}


def _post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("platforms")
    workloads = "tiny-mlp,string-identity"  # a python example: its model.py is code too
    subprocess.run(inferpack("repo", "init", str(root), "--workloads", workloads), check=True)
    marker = root / "imported.marker"
    source = (root / "string-identity" / "1" / "model.py").read_text()
    opened = f"open({str(marker)!r}, 'w').close()  # proves the file ran\n"
    (root / "string-identity" / "1" / "model.py").write_text(opened + source)
    folder = root / "scripted"
    (folder / "1").mkdir(parents=True)
    torch.jit.script(nn.Linear(16, 4)).save(str(folder / "1" / "model.pt"))
    config = {
        "name": "scripted",
        "platform": "torchscript",
        "max_batch_size": 8,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [16]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [4]}],
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(config))
    return root


def test_a_refused_platform_is_unavailable_with_the_reason(repo: Path, tmp_path: Path) -> None:
    args = ("--model-repository", str(repo), "--http-port", "0", "--grpc-port", "-1")
    with serve(tmp_path / "serve.log", *args, "--allowed-platforms", "workload,onnx") as server:
        assert _post(f"{server.url}/v2/models/tiny-mlp/infer", TINY)[0] == 200
        status, body = _post(f"{server.url}/v2/models/scripted/infer", TINY)
        assert status == 503, body
        status, index = _post(f"{server.url}/v2/repository/index", {})
        assert status == 200
        scripted = next(item for item in index if item["name"] == "scripted")
        assert scripted["state"] == "UNAVAILABLE"
        assert "platform 'torchscript' is not allowed" in scripted["reason"]
        assert "--allowed-platforms onnx,workload" in scripted["reason"]
        python = next(item for item in index if item["name"] == "string-identity")
        assert "platform 'python' is not allowed" in python["reason"]
        assert not (repo / "imported.marker").exists()  # refused before its file was run
    # Without the flag the same repository serves all three.
    with serve(tmp_path / "all.log", *args) as server:
        assert _post(f"{server.url}/v2/models/scripted/infer", TINY)[0] == 200
        words = {
            "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "data": ["w"]}]
        }
        status, body = _post(f"{server.url}/v2/models/string-identity/infer", words)
        assert status == 200 and body["outputs"][0]["data"] == ["w"]
        assert (repo / "imported.marker").exists()


def test_an_unknown_platform_name_is_refused(repo: Path) -> None:
    done = subprocess.run(
        inferpack("serve", "--model-repository", str(repo), "--allowed-platforms", "onnx,pickle"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown platform(s) 'pickle'" in done.stdout + done.stderr
