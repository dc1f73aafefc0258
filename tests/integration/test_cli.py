"""The real CLI: ``repo init`` then ``serve`` in a subprocess with its flags, requests, a
clean stop. Each server start exercises several flags at once to keep the suite fast
(--cache-dir, --model-control-mode lru and --memory-budget-mb: test_s3_repository.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from tests.helpers import edit_model
from tests.integration.cli_server import inferpack, serve

TOKEN = "cli-test-token"
TINY_BODY = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]
}


def _call(
    url: str, body: Any = None, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of a GET (no body) or POST, errors included."""
    payload = data if data is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=payload, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-repo")
    subprocess.run(inferpack("repo", "init", str(root), "--workloads", "tiny-mlp"), check=True)
    edit_model(root, "tiny-mlp", "other")
    return root


def test_repo_init_and_serve_from_the_command_line(repo: Path, tmp_path: Path) -> None:
    listed = subprocess.run(
        inferpack("repo", "list", str(repo)), capture_output=True, text=True, check=True
    )
    assert listed.stdout.startswith("other\tworkload")
    assert "\ntiny-mlp\tworkload" in listed.stdout

    args = ("--model-repository", str(repo), "--http-port", "0", "--grpc-port", "-1")
    with serve(tmp_path / "serve.log", *args) as server:
        assert server.grpc_address is None  # --grpc-port -1: no gRPC endpoint
        curl = re.search(r"curl -s -X POST (\S+) -d '(.*)'", server.output())
        assert curl, server.output()
        status, _, payload = _call(curl.group(1), data=curl.group(2).encode())
        assert status == 200 and payload["outputs"][0]["shape"] == [1, 4]
    assert "draining" in server.output()


def test_serve_flags_take_effect(repo: Path, tmp_path: Path) -> None:
    """--host --grpc-port 0 --model-control-mode explicit --load-model --max-request-bytes
    --max-inflight-bytes --log-level debug --cpu-threads --repository-api-token, in one
    start."""
    args = (
        "--model-repository", str(repo), "--host", "127.0.0.1", "--http-port", "0",
        "--grpc-port", "0", "--model-control-mode", "explicit", "--load-model", "tiny-mlp",
        "--max-request-bytes", "4096", "--max-inflight-bytes", "1", "--log-level", "debug",
        "--cpu-threads", "4", "--repository-api-token", TOKEN,
    )  # fmt: skip
    with serve(tmp_path / "serve.log", *args) as server:
        url = server.url
        # explicit + --load-model: only tiny-mlp was loaded at start.
        assert _call(f"{url}/v2/models/tiny-mlp/ready")[0] == 200
        assert _call(f"{url}/v2/models/other/ready")[0] == 503
        # --max-request-bytes: a small request passes, one over 4096 bytes is refused.
        status, _, payload = _call(f"{url}/v2/models/tiny-mlp/infer", TINY_BODY)
        assert status == 200, payload
        padded = json.dumps(TINY_BODY).encode() + b" " * 4096
        assert _call(f"{url}/v2/models/tiny-mlp/infer", data=padded)[0] == 413
        # --max-inflight-bytes 1: a request alone is admitted, concurrent ones are refused.
        with ThreadPoolExecutor(16) as pool:
            statuses = list(
                pool.map(
                    lambda _: _call(f"{url}/v2/models/tiny-mlp/infer", TINY_BODY)[0], range(32)
                )
            )
        assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses, statuses
        _check_repository_api_needs_the_token(url)
        _check_grpc_repository_api_needs_the_token(str(server.grpc_address))
        # --cpu-threads 4 = 2 workers x 2 intra-op threads, as torch reports on a worker.
        output = server.output()
        assert "cpu: 2 worker threads x 2 torch intra-op threads (cpu threads 4)" in output
        assert re.search(r"DEBUG \S+: worker-cpu_\d+: torch intra-op threads 2\b", output)


def _check_repository_api_needs_the_token(url: str) -> None:
    index = f"{url}/v2/repository/index"
    status, headers, payload = _call(index, {})
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer", payload
    assert _call(index, {}, {"Authorization": "Bearer wrong"})[0] == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, _, rows = _call(index, {}, auth)
    assert status == 200 and {row["name"] for row in rows} == {"tiny-mlp", "other"}
    assert _call(f"{url}/v2/repository/models/other/load", {}, auth)[0] == 200
    assert _call(f"{url}/v2/models/other/ready")[0] == 200


def _check_grpc_repository_api_needs_the_token(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        with pytest.raises(grpc.RpcError) as refused:
            stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        reply = stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=metadata, timeout=10)
        assert {m.name for m in reply.models} == {"tiny-mlp", "other"}


def test_the_token_can_come_from_the_environment_on_a_public_host(
    repo: Path, tmp_path: Path
) -> None:
    """--host 0.0.0.0 opens the repository API only with a token, here from the env."""
    env = {**os.environ, "INFERPACK_REPOSITORY_API_TOKEN": TOKEN}
    args = ("--model-repository", str(repo), "--host", "0.0.0.0", "--http-port", "0",
            "--grpc-port", "-1", "--model-control-mode", "explicit")  # fmt: skip
    with serve(tmp_path / "serve.log", *args, env=env) as server:
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        assert _call(f"{url}/v2/health/live")[0] == 200
        index = f"{url}/v2/repository/index"
        assert _call(index, {})[0] == 401
        assert _call(index, {}, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert TOKEN not in server.output()


def test_cpu_threads_must_be_positive(repo: Path) -> None:
    done = subprocess.run(
        inferpack("serve", "--model-repository", str(repo), "--cpu-threads", "0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "--cpu-threads" in done.stderr
