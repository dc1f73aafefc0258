"""A model repository on the local filesystem."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from inferpack.config.model_config import ModelConfig, parse_model_config
from inferpack.errors import ConfigError, NotFoundError

CONFIG_FILE = "model.yaml"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Everything a backend needs to load one version of a model."""

    config: ModelConfig
    version: str
    artifact_path: Path


def version_numbers(names: Iterable[str]) -> list[str]:
    """The numeric folder names among ``names``, oldest first (numeric order)."""
    return [str(n) for n in sorted(int(name) for name in names if name.isdigit())]


def versions_to_serve(config: ModelConfig, versions: list[str], where: str) -> list[str]:
    """Apply the version policy; a model without any version folder is a ConfigError."""
    if not versions:
        raise ConfigError([f"{where}: no version folder (e.g. 1/{config.artifact})"])
    return versions[-1:] if config.version_policy == "latest" else versions


class LocalRepository:
    def __init__(self, root: Path) -> None:
        self.root = root

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            raise ConfigError([f"{self.root}: model repository is not a directory"])
        return sorted(p.name for p in self.root.iterdir() if (p / CONFIG_FILE).is_file())

    def config(self, name: str) -> ModelConfig:
        path = self.root / name / CONFIG_FILE
        if not path.is_file():
            raise NotFoundError(f"model {name!r} is not in repository {self.root}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError([f"{path}: not valid YAML: {error}"]) from None
        config = parse_model_config(raw, str(path), default_name=name)
        if config.name != name:
            raise ConfigError([f"{path}: name: {config.name!r} differs from its folder {name!r}"])
        return config

    def versions(self, name: str) -> list[str]:
        """Version folders, oldest first (numeric order)."""
        return version_numbers(p.name for p in (self.root / name).iterdir() if p.is_dir())

    def sources(self, name: str) -> list[ModelSource]:
        """The versions to serve under the model's version policy, each with its artifact."""
        config = self.config(name)
        sources = []
        for version in versions_to_serve(config, self.versions(name), str(self.root / name)):
            path = self.root / name / version / config.artifact
            if not path.is_file():
                raise ConfigError([f"{path}: artifact missing (model.yaml artifact field)"])
            sources.append(ModelSource(config, version, path))
        return sources
