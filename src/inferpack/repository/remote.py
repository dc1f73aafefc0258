"""A model repository in an object store (s3://, gs://, http(s)://), through fsspec.

Same layout and interface as :class:`LocalRepository`. Artifacts are fetched at load into
a private local cache (:mod:`inferpack.repository.cache`: per user, one folder per
repository URL, symlinks refused, each artifact checked against the SHA-256 recorded when
it was written) through a temp file and an atomic rename; an unchanged artifact (same size
and ETag/checksum in the store) is not fetched again.

The list of models is cached for ``listing_ttl_s`` (5 s): repository index calls, which
anyone reaching the server may make, cost at most one object-store listing per 5 s, and a
model added to the store shows up within that time.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from inferpack.config.model_config import ModelConfig
from inferpack.errors import ConfigError, MissingExtraError, NotFoundError
from inferpack.repository.cache import ArtifactCache, RemoteFile, default_cache_root
from inferpack.repository.local import (
    ARTIFACT_FIELDS,
    CONFIG_FILES,
    LocalRepository,
    ModelSource,
    choose_config_file,
    parse_config_text,
    version_numbers,
    versions_to_serve,
)

# Fields of fsspec's info() that change with the content, most specific first.
FINGERPRINT_KEYS = ("ChecksumSHA256", "md5Hash", "crc32c", "ETag", "etag", "checksum")
# Seconds a listing of the store's models is reused (an S3 LIST is billed and takes ~0.1 s).
LISTING_TTL_S = 5.0


def _md5_base64(path: Path) -> str:
    with path.open("rb") as file:
        return base64.b64encode(hashlib.file_digest(file, "md5").digest()).decode()


def _fingerprint(info: dict[str, Any]) -> str | None:
    for key in FINGERPRINT_KEYS:
        value = info.get(key)
        if value:
            return f"{key}:{value}"
    return None


class RemoteRepository:
    """A repository at ``url``; artifacts cached under ``cache_dir`` in the URL's folder."""

    def __init__(
        self,
        url: str,
        cache_dir: Path,
        storage_options: dict[str, Any] | None = None,
        listing_ttl_s: float = LISTING_TTL_S,
        clock: Callable[[], float] = time.monotonic,
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
        self.cache = ArtifactCache(cache_dir, self.root)
        self.cache.open()
        self._listing_ttl_s = listing_ttl_s
        self._clock = clock
        self._listing: tuple[float, list[str]] | None = None  # (listed at, names)
        self._listing_lock = threading.Lock()  # concurrent index calls share one listing

    def _remote(self, *parts: str) -> str:
        return "/".join((self._base, *parts))

    def _check_name(self, name: str) -> None:
        if not name or "/" in name or name in {".", ".."}:
            raise NotFoundError(f"model {name!r} is not in repository {self.root}")

    def model_names(self) -> list[str]:
        """The models in the store, listed at most once per ``listing_ttl_s``."""
        with self._listing_lock:
            now = self._clock()
            if self._listing is None or now - self._listing[0] >= self._listing_ttl_s:
                self._listing = (now, self._list_models())
            return list(self._listing[1])

    def _list_models(self) -> list[str]:
        self._fs.invalidate_cache()  # a long-lived server sees models added since
        try:
            if not self._fs.isdir(self._base):
                raise ConfigError([f"{self.root}: model repository is not a directory"])
            # One listing for both config files: the store is listed to the same depth anyway.
            found = [PurePosixPath(str(p)) for p in self._fs.glob(self._remote("*", "*"))]
        except OSError as error:
            raise ConfigError([f"{self.root}: cannot list the model repository: {error}"]) from None
        return sorted({path.parent.name for path in found if path.name in CONFIG_FILES})

    def config(self, name: str) -> ModelConfig:
        self._check_name(name)
        try:
            present = [f for f in CONFIG_FILES if self._fs.isfile(self._remote(name, f))]
        except OSError as error:
            raise ConfigError([f"{self.root}/{name}: cannot read: {error}"]) from None
        file_name = choose_config_file(present, f"{self.root}/{name}")
        if file_name is None:
            raise NotFoundError(f"model {name!r} is not in repository {self.root}")
        url = f"{self.root}/{name}/{file_name}"
        try:
            text = bytes(self._fs.cat_file(self._remote(name, file_name))).decode()
        except FileNotFoundError:
            raise NotFoundError(f"model {name!r} is not in repository {self.root}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError([f"{url}: cannot read: {error}"]) from None
        return parse_config_text(file_name, text, url, name)

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
            local = self._fetch(name, version, config.artifact)
            sources.append(ModelSource(config, version, local))
        for file_name in config.folder_files():  # labels, tokenizer: beside model.yaml
            self._fetch(name, None, file_name)
        return sources

    def _fetch(self, name: str, version: str | None, artifact: str) -> Path:
        """The cached artifact (``version`` None: a file of the model folder), downloaded
        first unless the cached copy is current."""
        parts = (name, artifact) if version is None else (name, version, artifact)
        url = "/".join((self.root, *parts))
        remote = self._remote(*parts)
        try:
            info: dict[str, Any] = dict(self._fs.info(remote))
        except FileNotFoundError:
            raise ConfigError([f"{url}: artifact missing ({ARTIFACT_FIELDS})"]) from None
        if info.get("type") != "file":
            raise ConfigError([f"{url}: artifact is not a file ({ARTIFACT_FIELDS})"])
        stored = RemoteFile(url, info.get("size"), _fingerprint(info))
        local = self.cache.locate(name, version, artifact)
        if self.cache.is_current(local, stored):
            return local
        with self.cache.writing(local, stored) as tmp:
            self._fs.get_file(remote, str(tmp))
            got = tmp.stat().st_size
            if stored.size is not None and got != stored.size:
                raise ConfigError([f"{url}: downloaded {got} bytes, the store has {stored.size}"])
            md5 = info.get("md5Hash")  # GCS: base64 MD5 of the content
            if md5 and _md5_base64(tmp) != md5:
                raise ConfigError([f"{url}: downloaded content does not match its MD5 {md5}"])
        return local


def open_repository(
    location: str, cache_dir: Path | None = None
) -> LocalRepository | RemoteRepository:
    """A local path or file:// URL gives a LocalRepository; any other URL a RemoteRepository,
    caching under ``cache_dir`` (default: the per-user cache folder)."""
    if location.startswith("file://"):
        return LocalRepository(Path(location.removeprefix("file://")))
    if "://" not in location:
        return LocalRepository(Path(location))
    return RemoteRepository(location, cache_dir or default_cache_root())
