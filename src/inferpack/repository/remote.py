"""A model repository in an object store (s3://, gs://, http(s)://), through fsspec.

Same layout and interface as :class:`LocalRepository`. Artifacts are fetched at load into a
local cache, ``<cache_dir>/<model>/<version>/<artifact>``, through a temp file and an atomic
rename; a sidecar ``<artifact>.meta.json`` keeps the remote size and ETag/checksum so an
unchanged artifact is not fetched again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from inferpack.config.model_config import ModelConfig, parse_model_config
from inferpack.errors import ConfigError, MissingExtraError, NotFoundError
from inferpack.repository.local import (
    CONFIG_FILE,
    LocalRepository,
    ModelSource,
    version_numbers,
    versions_to_serve,
)

# Fields of fsspec's info() that change with the content, most specific first.
FINGERPRINT_KEYS = ("ChecksumSHA256", "md5Hash", "crc32c", "ETag", "etag", "checksum")
DEFAULT_CACHE_DIR_NAME = "inferpack-cache"


def _file_digest(path: Path, algorithm: str) -> bytes:
    with path.open("rb") as file:
        return hashlib.file_digest(file, algorithm).digest()


def _fingerprint(info: dict[str, Any]) -> str | None:
    for key in FINGERPRINT_KEYS:
        value = info.get(key)
        if value:
            return f"{key}:{value}"
    return None


class RemoteRepository:
    def __init__(
        self, url: str, cache_dir: Path, storage_options: dict[str, Any] | None = None
    ) -> None:
        self.root = url.rstrip("/")
        self.cache_dir = cache_dir
        try:
            from fsspec.core import url_to_fs  # type: ignore[import-untyped]

            self._fs, base = url_to_fs(self.root, **(storage_options or {}))
        except ImportError:
            raise MissingExtraError("s3fs", "s3") from None
        except ValueError as error:  # unknown protocol
            raise ConfigError([f"{self.root}: {error}"]) from None
        self._base = str(base).rstrip("/")

    def _remote(self, *parts: str) -> str:
        return "/".join((self._base, *parts))

    def _check_name(self, name: str) -> None:
        if not name or "/" in name or name in {".", ".."}:
            raise NotFoundError(f"model {name!r} is not in repository {self.root}")

    def model_names(self) -> list[str]:
        self._fs.invalidate_cache()  # a long-lived server sees models added since
        try:
            if not self._fs.isdir(self._base):
                raise ConfigError([f"{self.root}: model repository is not a directory"])
            found = self._fs.glob(self._remote("*", CONFIG_FILE))
        except OSError as error:
            raise ConfigError([f"{self.root}: cannot list the model repository: {error}"]) from None
        return sorted(PurePosixPath(str(path)).parent.name for path in found)

    def config(self, name: str) -> ModelConfig:
        self._check_name(name)
        url = f"{self.root}/{name}/{CONFIG_FILE}"
        try:
            text = bytes(self._fs.cat_file(self._remote(name, CONFIG_FILE))).decode()
        except FileNotFoundError:
            raise NotFoundError(f"model {name!r} is not in repository {self.root}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError([f"{url}: cannot read: {error}"]) from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError([f"{url}: not valid YAML: {error}"]) from None
        config = parse_model_config(raw, url, default_name=name)
        if config.name != name:
            raise ConfigError([f"{url}: name: {config.name!r} differs from its folder {name!r}"])
        return config

    def versions(self, name: str) -> list[str]:
        """Version folders, oldest first (numeric order)."""
        self._check_name(name)
        try:
            entries = self._fs.ls(self._remote(name), detail=True)
        except FileNotFoundError:
            raise NotFoundError(f"model {name!r} is not in repository {self.root}") from None
        return version_numbers(
            PurePosixPath(str(e["name"]).rstrip("/")).name
            for e in entries
            if e.get("type") == "directory"
        )

    def sources(self, name: str) -> list[ModelSource]:
        """The versions to serve under the version policy, each fetched into the cache."""
        config = self.config(name)
        sources = []
        for version in versions_to_serve(config, self.versions(name), f"{self.root}/{name}"):
            local = self.cache_dir / name / version / config.artifact
            self._fetch(name, version, config.artifact, local)
            sources.append(ModelSource(config, version, local))
        return sources

    def _fetch(self, name: str, version: str, artifact: str, local: Path) -> None:
        """Download one artifact into ``local`` unless the cached copy is current."""
        url = f"{self.root}/{name}/{version}/{artifact}"
        remote = self._remote(name, version, artifact)
        try:
            info: dict[str, Any] = dict(self._fs.info(remote))
        except FileNotFoundError:
            raise ConfigError([f"{url}: artifact missing (model.yaml artifact field)"]) from None
        if info.get("type") != "file":
            raise ConfigError([f"{url}: artifact is not a file (model.yaml artifact field)"])
        size = info.get("size")
        fingerprint = _fingerprint(info)
        meta_path = local.with_name(local.name + ".meta.json")
        if _is_current(local, meta_path, url, size, fingerprint):
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            self._fs.get_file(remote, str(tmp))
            got = tmp.stat().st_size
            if size is not None and got != size:
                raise ConfigError([f"{url}: downloaded {got} bytes, the store has {size}"])
            md5 = info.get("md5Hash")  # GCS: base64 MD5 of the content
            if md5 and base64.b64encode(_file_digest(tmp, "md5")).decode() != md5:
                raise ConfigError([f"{url}: downloaded content does not match its MD5 {md5}"])
            sha256 = _file_digest(tmp, "sha256").hex()
            meta_path.unlink(missing_ok=True)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        meta = {"url": url, "size": got, "fingerprint": fingerprint, "sha256": sha256}
        _write_atomic(meta_path, json.dumps(meta, indent=2).encode())


def _is_current(
    local: Path, meta_path: Path, url: str, size: int | None, fingerprint: str | None
) -> bool:
    """Whether the cached artifact is the remote one: same URL, size, ETag and intact bytes."""
    if fingerprint is None or not local.is_file():
        return False  # without an ETag/checksum a change cannot be told: fetch again
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    local_size = local.stat().st_size
    return (
        meta.get("url") == url
        and meta.get("fingerprint") == fingerprint
        and meta.get("size") == local_size
        and (size is None or size == local_size)
        and meta.get("sha256") == _file_digest(local, "sha256").hex()
    )


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def open_repository(
    location: str, cache_dir: Path | None = None
) -> LocalRepository | RemoteRepository:
    """A local path or file:// URL gives a LocalRepository; any other URL a RemoteRepository."""
    if location.startswith("file://"):
        return LocalRepository(Path(location.removeprefix("file://")))
    if "://" not in location:
        return LocalRepository(Path(location))
    cache = cache_dir or Path(tempfile.gettempdir()) / DEFAULT_CACHE_DIR_NAME
    return RemoteRepository(location, cache)
