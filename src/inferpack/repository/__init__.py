"""Model repositories: a folder of models, one sub-folder each (Triton layout).

    <repo>/<model>/model.yaml
    <repo>/<model>/<version>/<artifact>

on the local filesystem (:class:`LocalRepository`) or in an object store through fsspec
(:class:`~inferpack.repository.remote.RemoteRepository`, s3:// gs:// http(s)://), both
behind the :class:`Repository` interface the runtime uses.
"""

from __future__ import annotations

from typing import Protocol

from inferpack.config.model_config import ModelConfig
from inferpack.repository.local import LocalRepository, ModelSource


class Repository(Protocol):
    """What the runtime needs of a repository. Calls may do I/O: run them off the loop."""

    def model_names(self) -> list[str]: ...

    def config(self, name: str) -> ModelConfig: ...

    def versions(self, name: str) -> list[str]: ...

    def sources(self, name: str) -> list[ModelSource]:
        """Versions to serve, each with a local artifact path (fetched if remote)."""
        ...


__all__ = ["LocalRepository", "ModelSource", "Repository"]
