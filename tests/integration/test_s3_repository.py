"""An s3:// model repository against moto's S3 server on 127.0.0.1, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from inferpack.config import ServerConfig
from inferpack.errors import ConfigError, NotFoundError
from inferpack.repository import LocalRepository
from inferpack.repository.remote import RemoteRepository, open_repository
from tests.helpers import ServerThread, reference_outputs

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
    assert source.artifact_path == cache / "tiny-mlp" / "1" / ARTIFACT
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
    assert not (tmp_path / "cache" / "tiny-mlp" / "1" / ARTIFACT).exists()


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


def test_open_repository_picks_the_implementation(s3: S3, tmp_path: Path) -> None:
    assert isinstance(open_repository(str(tmp_path)), LocalRepository)
    local = open_repository(f"file://{tmp_path}")
    assert isinstance(local, LocalRepository)
    assert local.root == tmp_path
    remote = open_repository(f"s3://{BUCKET}/{PREFIX}", tmp_path / "cache")
    assert isinstance(remote, RemoteRepository)
    assert remote.cache_dir == tmp_path / "cache"
    default = open_repository(f"s3://{BUCKET}/{PREFIX}")
    assert isinstance(default, RemoteRepository)
    assert default.cache_dir.name == "inferpack-cache"


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
        assert (tmp_path / "cache" / "tiny-mlp" / "1" / ARTIFACT).is_file()
    finally:
        thread.stop()
