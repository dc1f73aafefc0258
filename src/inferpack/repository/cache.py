"""The local cache of an object-store repository's artifacts: private, namespaced, checked.

Layout, one namespace per repository URL::

    <root>/<sha256(url)[:16]>/<model>/<version>/<artifact>
                                                <artifact>.meta.json

where the sidecar holds the URL, size, remote fingerprint and SHA-256 of the artifact.

What could go wrong, and what answers it:

- Another local user plants or swaps files (the old default, /tmp/inferpack-cache, was
  shared and predictable): the default root is per user (``$XDG_CACHE_HOME/inferpack`` or
  ``~/.cache/inferpack``); any root must be owned by this user and not writable by group
  or others; every folder created below it is 0700.
- Symlinks planted to redirect writes or reads: folders and files under the namespace are
  checked with lstat and opened with O_NOFOLLOW. A symlinked folder is refused
  (ConfigError); a symlinked file counts as absent and is replaced, never followed.
- Two repositories with the same model names: a namespace per repository URL.
- A damaged or altered artifact: it is reused only if its sidecar names the same URL,
  size and remote fingerprint (ETag or checksum) and its bytes hash to the SHA-256 the
  sidecar recorded when they were written. Anything else is fetched again. The sidecar
  sits beside the artifact in the same private folder: whoever could rewrite both could
  rewrite the server's own files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferpack.errors import ConfigError

CACHE_FOLDER_NAME = "inferpack"
META_SUFFIX = ".meta.json"
_PRIVATE_MODE = 0o700
_NAMESPACE_HEX_CHARS = 16  # 64 bits of the URL's SHA-256: no collision among a host's repos


def default_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/inferpack``, else ``~/.cache/inferpack`` (XDG base directory spec:
    a relative XDG_CACHE_HOME is invalid and ignored)."""
    base = (os.environ if environ is None else environ).get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / CACHE_FOLDER_NAME


def namespace(url: str) -> str:
    """The cache folder name of a repository URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:_NAMESPACE_HEX_CHARS]


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """What the store says of one artifact; ``fingerprint`` None: a change can't be told."""

    url: str
    size: int | None
    fingerprint: str | None


def _owner_problem(path: Path, info: os.stat_result) -> str | None:
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"{path}: cache folder belongs to another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path}: cache folder is writable by group or others (chmod 700 it)"
    return None


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) or accept it only as a plain folder of ours, never a symlink."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=_PRIVATE_MODE)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError([f"{path}: not a plain folder (a symlink?): refusing the cache there"])
    problem = _owner_problem(path, info)
    if problem:
        raise ConfigError([problem])


def _digest(path: Path) -> str | None:
    """SHA-256 of a regular file, never through a symlink; None if it can't be read so."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return hashlib.file_digest(file, "sha256").hexdigest()


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as file:
            meta = json.loads(file.read())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


class ArtifactCache:
    """The cache folder of one repository URL under ``root`` (module docstring)."""

    def __init__(self, root: Path, repository_url: str) -> None:
        self.root = root
        self.dir = root / namespace(repository_url)

    def open(self) -> None:
        """Create or check the root and the namespace; ConfigError if unsafe."""
        try:
            self.root.mkdir(mode=_PRIVATE_MODE, parents=True, exist_ok=True)
            # The root itself may be a symlink the operator made: check where it leads.
            problem = _owner_problem(self.root, self.root.stat())
            if problem:
                raise ConfigError([f"{problem}; choose another with --cache-dir"])
            _private_dir(self.dir)
        except OSError as error:
            raise ConfigError([f"{self.root}: cannot use as the cache: {error}"]) from None

    def locate(self, name: str, version: str | None, artifact: str) -> Path:
        """Where the artifact lives in the cache (``version`` None: a file of the model
        folder, as labels and tokenizers are); its folders are made (or checked) safe."""
        folder = self.dir
        for part in (name, version) if version is not None else (name,):
            folder = folder / part
            _private_dir(folder)
        return folder / artifact

    def is_current(self, local: Path, remote: RemoteFile) -> bool:
        """Whether ``local`` holds exactly the bytes recorded for ``remote``."""
        if remote.fingerprint is None:
            return False  # without an ETag/checksum a change cannot be told: fetch again
        meta = _read_meta(local.with_name(local.name + META_SUFFIX))
        if (meta.get("url"), meta.get("fingerprint")) != (remote.url, remote.fingerprint):
            return False
        if remote.size is not None and meta.get("size") != remote.size:
            return False
        return meta.get("sha256") is not None and _digest(local) == meta["sha256"]

    @contextlib.contextmanager
    def writing(self, local: Path, remote: RemoteFile) -> Iterator[Path]:
        """A temp file beside ``local`` to download into; on a clean exit it replaces
        ``local`` atomically and its sidecar records the bytes' SHA-256. On an error the
        temp file goes and ``local`` is untouched."""
        meta_path = local.with_name(local.name + META_SUFFIX)
        fd, tmp_name = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            size = tmp.stat().st_size
            sha256 = _digest(tmp)
            meta_path.unlink(missing_ok=True)  # a crash from here leaves no stale sidecar
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        meta = {"url": remote.url, "size": size, "fingerprint": remote.fingerprint}
        _write_atomic(meta_path, json.dumps({**meta, "sha256": sha256}, indent=2).encode())
