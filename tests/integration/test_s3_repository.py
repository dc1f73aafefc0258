"""An s3:// model repository against moto's S3 server on 127.0.0.1, over real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import stat
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from inferpack.config import ServerConfig
from inferpack.errors import ConfigError, NotFoundError
from inferpack.repository import LocalRepository
from inferpack.repository.cache import namespace
from inferpack.repository.remote import RemoteRepository, open_repository
from tests.helpers import ServerThread, edit_model, reference_outputs
from tests.integration.cli_server import serve

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "inferpack-models"
PREFIX = "repos/main"
ARTIFACT = "model.safetensors"
CREDENTIALS = {"key": "testing", "secret": "testing"}


@dataclass
class S3:
    endpoint: str
    client: Any  # boto3 S3 client
    repo: Path  # the local original that was uploaded

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"client_kwargs": {"endpoint_url": self.endpoint}, **CREDENTIALS}

    def upload(self, folder: Path, prefix: str) -> None:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(folder).as_posix()}"
                self.client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())

    def repository(self, cache_dir: Path, prefix: str = PREFIX) -> RemoteRepository:
        return RemoteRepository(f"s3://{BUCKET}/{prefix}", cache_dir, self.storage_options)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    import boto3
    from moto.server import ThreadedMotoServer

    from inferpack.repository.init import init_repository

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["key"])
        env.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["secret"])
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("AWS_CONFIG_FILE", "/nonexistent")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        env.setenv("NO_PROXY", "127.0.0.1")
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            client.create_bucket(Bucket=BUCKET)
            repo = tmp_path_factory.mktemp("s3-origin")
            init_repository(repo, ["tiny-mlp"], seed=0)
            store = S3(endpoint, client, repo)
            store.upload(repo, PREFIX)
            yield store
        finally:
            server.stop()


def _spy_downloads(repository: RemoteRepository, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every remote file the repository downloads."""
    calls: list[str] = []
    get_file = repository._fs.get_file

    def spy(remote: str, local: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(remote)
        return get_file(remote, local, *args, **kwargs)

    monkeypatch.setattr(repository._fs, "get_file", spy)
    return calls


def test_lists_and_parses_the_remote_repository(s3: S3, tmp_path: Path) -> None:
    repository = s3.repository(tmp_path / "cache")
    assert repository.root == f"s3://{BUCKET}/{PREFIX}"
    assert repository.model_names() == ["tiny-mlp"]
    config = repository.config("tiny-mlp")
    assert config.name == "tiny-mlp"
    assert config.artifact == ARTIFACT
    assert repository.versions("tiny-mlp") == ["1"]


def test_sources_fetch_the_artifact_into_the_cache(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    repository = s3.repository(cache)
    downloads = _spy_downloads(repository, monkeypatch)
    [source] = repository.sources("tiny-mlp")
    assert source.version == "1"
    assert source.artifact_path == cache / namespace(repository.root) / "tiny-mlp" / "1" / ARTIFACT
    original = (s3.repo / "tiny-mlp" / "1" / ARTIFACT).read_bytes()
    assert source.artifact_path.read_bytes() == original
    meta = json.loads(source.artifact_path.with_name(f"{ARTIFACT}.meta.json").read_text())
    assert meta["size"] == len(original)
    assert meta["fingerprint"].startswith("ETag:")
    assert len(downloads) == 1
    assert not list(source.artifact_path.parent.glob("*.part"))  # no temp file left behind

    before = source.artifact_path.stat()
    [again] = s3.repository(cache).sources("tiny-mlp")  # a new repository, the same cache
    after = again.artifact_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(downloads) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip-byte", "drop-meta"])
def test_a_damaged_cache_is_fetched_again(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    repository = s3.repository(tmp_path / "cache")
    [source] = repository.sources("tiny-mlp")
    path = source.artifact_path
    original = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(original[: len(original) // 2])
    elif damage == "flip-byte":
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    else:
        path.with_name(f"{ARTIFACT}.meta.json").unlink()
    downloads = _spy_downloads(repository, monkeypatch)
    [again] = repository.sources("tiny-mlp")
    assert again.artifact_path.read_bytes() == original
    assert len(downloads) == 1


def test_a_changed_remote_artifact_is_fetched_again(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "repos/changing"
    s3.upload(s3.repo, prefix)
    repository = s3.repository(tmp_path / "cache", prefix)
    repository.sources("tiny-mlp")  # cached once
    key = f"{prefix}/tiny-mlp/1/{ARTIFACT}"
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=b"new weights")
    downloads = _spy_downloads(repository, monkeypatch)
    [again] = repository.sources("tiny-mlp")
    assert again.artifact_path.read_bytes() == b"new weights"
    assert len(downloads) == 1


def test_a_size_mismatch_is_a_config_error(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository = s3.repository(tmp_path / "cache")
    info = repository._fs.info

    def lying_info(path: str, **kwargs: Any) -> dict[str, Any]:
        found = dict(info(path, **kwargs))
        found["size"] += 1
        return found

    monkeypatch.setattr(repository._fs, "info", lying_info)
    with pytest.raises(ConfigError, match=rf"s3://{BUCKET}/{PREFIX}/tiny-mlp/1/{ARTIFACT}"):
        repository.sources("tiny-mlp")
    assert list((repository.cache.dir / "tiny-mlp" / "1").iterdir()) == []


def test_unknown_model_and_missing_artifact(s3: S3, tmp_path: Path) -> None:
    repository = s3.repository(tmp_path / "cache")
    for call in (repository.config, repository.sources, repository.versions):
        with pytest.raises(NotFoundError, match="'nope' is not in repository s3://"):
            call("nope")

    prefix = "repos/no-artifact"
    config = (s3.repo / "tiny-mlp" / "model.yaml").read_bytes()
    s3.client.put_object(Bucket=BUCKET, Key=f"{prefix}/tiny-mlp/model.yaml", Body=config)
    s3.client.put_object(Bucket=BUCKET, Key=f"{prefix}/tiny-mlp/1/README", Body=b"no weights")
    broken = s3.repository(tmp_path / "cache", prefix)
    with pytest.raises(ConfigError, match=f"{prefix}/tiny-mlp/1/{ARTIFACT}: artifact missing"):
        broken.sources("tiny-mlp")


def test_a_missing_repository_is_a_config_error(s3: S3, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model repository is not a directory"):
        s3.repository(tmp_path / "cache", "repos/absent").model_names()


def test_open_repository_picks_the_implementation(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(open_repository(str(tmp_path)), LocalRepository)
    local = open_repository(f"file://{tmp_path}")
    assert isinstance(local, LocalRepository)
    assert local.root == tmp_path
    remote = open_repository(f"s3://{BUCKET}/{PREFIX}", tmp_path / "cache")
    assert isinstance(remote, RemoteRepository)
    assert remote.cache_dir == tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    default = open_repository(f"s3://{BUCKET}/{PREFIX}")
    assert isinstance(default, RemoteRepository)
    assert default.cache_dir == tmp_path / "xdg" / "inferpack"  # per user, not a shared /tmp
    assert stat.S_IMODE(default.cache.dir.stat().st_mode) == 0o700


async def test_serve_and_infer_from_s3(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real server path: an s3:// URL, the endpoint from the standard AWS variable."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    config = ServerConfig(
        f"s3://{BUCKET}/{PREFIX}", http_port=0, grpc_port=None, cache_dir=tmp_path / "cache"
    )
    thread = ServerThread(config).start()
    try:
        rows = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32)
        expected = reference_outputs(s3.repo, "tiny-mlp", rows)[0]
        body = {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [3, 16],
                    "data": rows.ravel().tolist(),
                }
            ]
        }
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{thread.url}/v2/health/ready") as response:
                assert response.status == 200
            url = f"{thread.url}/v2/models/tiny-mlp/infer"
            async with session.post(url, json=body) as response:
                assert response.status == 200, await response.text()
                payload = await response.json()
        [output] = payload["outputs"]
        got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        folder = tmp_path / "cache" / namespace(f"s3://{BUCKET}/{PREFIX}")
        assert (folder / "tiny-mlp" / "1" / ARTIFACT).is_file()
    finally:
        thread.stop()


def _spy_listings(repository: RemoteRepository, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every listing of the store's models."""
    calls: list[str] = []
    glob = repository._fs.glob

    def spy(pattern: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(pattern)
        return glob(pattern, *args, **kwargs)

    monkeypatch.setattr(repository._fs, "glob", spy)
    return calls


def test_model_listing_is_reused_for_its_ttl(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "repos/listing"
    s3.upload(s3.repo, prefix)
    now = [100.0]
    repository = RemoteRepository(
        f"s3://{BUCKET}/{prefix}",
        tmp_path / "cache",
        s3.storage_options,
        listing_ttl_s=5.0,
        clock=lambda: now[0],
    )
    listings = _spy_listings(repository, monkeypatch)
    with ThreadPoolExecutor(4) as pool:  # concurrent index calls share one listing
        assert list(pool.map(lambda _: repository.model_names(), range(8))) == [["tiny-mlp"]] * 8
    assert len(listings) == 1

    config = (s3.repo / "tiny-mlp" / "model.yaml").read_text().replace("tiny-mlp", "added")
    s3.client.put_object(Bucket=BUCKET, Key=f"{prefix}/added/model.yaml", Body=config.encode())
    now[0] += 4.9
    assert repository.model_names() == ["tiny-mlp"]  # within the TTL: the cached listing
    now[0] += 0.1
    assert repository.model_names() == ["added", "tiny-mlp"]
    assert len(listings) == 2


def test_serve_s3_from_the_cli_with_cache_dir_lru_and_budget(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--cache-dir is where artifacts land; --model-control-mode lru with
    --memory-budget-mb holds one tiny model (2,704 bytes measured) of two."""
    origin = tmp_path / "origin"
    shutil.copytree(s3.repo, origin)
    edit_model(origin, "tiny-mlp", "tiny-a")
    edit_model(origin, "tiny-mlp", "tiny-b")
    shutil.rmtree(origin / "tiny-mlp")
    prefix = "repos/cli"
    s3.upload(origin, prefix)
    url = f"s3://{BUCKET}/{prefix}"
    cache = tmp_path / "cli-cache"
    args = ("--model-repository", url, "--http-port", "0", "--grpc-port", "-1",
            "--model-control-mode", "lru", "--memory-budget-mb", "0.004",
            "--cache-dir", str(cache), "--log-level", "warning")  # fmt: skip
    env = {**os.environ, "AWS_ENDPOINT_URL": s3.endpoint}
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}]}
    ).encode()
    with serve(tmp_path / "serve.log", *args, env=env) as server:
        for name in ("tiny-a", "tiny-b"):
            request = urllib.request.Request(f"{server.url}/v2/models/{name}/infer", data=body)
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
        index_request = urllib.request.Request(f"{server.url}/v2/repository/index", data=b"{}")
        with urllib.request.urlopen(index_request, timeout=30) as response:
            index = {row["name"]: row for row in json.loads(response.read())}
    assert index["tiny-b"]["state"] == "READY"
    assert index["tiny-a"]["state"] == "UNAVAILABLE" and "evicted" in index["tiny-a"]["reason"]
    for name in ("tiny-a", "tiny-b"):
        assert (cache / namespace(url) / name / "1" / ARTIFACT).is_file()
    assert " INFO " not in server.output()  # --log-level warning


def test_labels_beside_model_yaml_are_fetched_with_the_model(s3: S3, tmp_path: Path) -> None:
    """A classifier's labels.txt (a file of the model folder, not of a version) comes from
    the store into the cache, where the served model's pipeline reads it."""
    import yaml

    from inferpack.repository.init import init_repository
    from inferpack.runtime.metrics import ServingMetrics
    from inferpack.runtime.served_model import ServedModel
    from inferpack.runtime.workers import DevicePools

    origin = tmp_path / "origin"
    init_repository(origin, ["small-cnn"], seed=0)
    path = origin / "small-cnn" / "model.yaml"
    config = yaml.safe_load(path.read_text())
    config["postprocess"]["classification"]["labels"] = "labels.txt"
    path.write_text(yaml.safe_dump(config))
    labels = [f"kind {i}" for i in range(10)]
    (origin / "small-cnn" / "labels.txt").write_text("\n".join(labels) + "\n")
    s3.upload(origin, "repos/labelled")

    repository = s3.repository(tmp_path / "cache", prefix="repos/labelled")
    [source] = repository.sources("small-cnn")
    pools = DevicePools(1)
    try:
        model = ServedModel.load(source, ServingMetrics(), pools)
        assert model.pipeline is not None and model.pipeline.labels == tuple(labels)
    finally:
        pools.shutdown()
