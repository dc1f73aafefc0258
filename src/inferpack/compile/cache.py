"""Compiled artifacts, cached so that an identical compile reuses the artifact.

The key is everything the artifact depends on: the source artifact's bytes and model.yaml,
target, precision, mode, batch buckets, channels_last and the torch version (a newer
torch may export differently). Stored in the per-user inferpack cache
(:func:`~inferpack.repository.cache.default_cache_root`) through :class:`ArtifactCache`,
which checks the folders are private and the bytes hash to what was recorded at writing::

    <cache root>/<namespace("inferpack-compile")>/<key>/artifact/<model.onnx|model.pt2>
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from inferpack.compile.spec import CompileSpec
from inferpack.config.model_config import model_config_to_dict
from inferpack.repository import ModelSource
from inferpack.repository.cache import ArtifactCache, RemoteFile, default_cache_root

_NAMESPACE_URL = "inferpack-compile"


def cache_key(spec: CompileSpec, source: ModelSource, torch_version: str) -> str:
    """SHA-256 over what the compiled artifact depends on (module docstring)."""
    with open(source.artifact_path, "rb") as file:
        artifact = hashlib.file_digest(file, "sha256").hexdigest()
    parts = {
        "artifact_sha256": artifact,
        "config": model_config_to_dict(source.config),
        "target": spec.target,
        "precision": spec.precision,
        "mode": spec.mode,
        "batch_buckets": list(spec.batch_buckets),
        "channels_last": spec.channels_last,
        "torch": torch_version,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CompileCache:
    """Compiled artifacts under ``root`` (the inferpack cache folder by default)."""

    root: Path

    @classmethod
    def default(cls) -> CompileCache:
        return cls(default_cache_root())

    def _store(self) -> ArtifactCache:
        store = ArtifactCache(self.root, _NAMESPACE_URL)
        store.open()
        return store

    def fetch(self, key: str, artifact: str, destination: Path) -> bool:
        """Copy the cached artifact to ``destination``; False where none is cached (or
        its bytes no longer hash to what was recorded)."""
        store = self._store()
        local = store.locate(key, "artifact", artifact)
        if not store.is_current(local, _entry(key)):
            return False
        shutil.copyfile(local, destination)
        return True

    def put(self, key: str, artifact: Path) -> None:
        store = self._store()
        local = store.locate(key, "artifact", artifact.name)
        with store.writing(local, _entry(key)) as tmp:
            shutil.copyfile(artifact, tmp)


def _entry(key: str) -> RemoteFile:
    return RemoteFile(url=f"{_NAMESPACE_URL}:{key}", size=None, fingerprint=key)
