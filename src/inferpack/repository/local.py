"""A model repository on the local filesystem."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from inferpack.config.model_config import ModelConfig, parse_model_config
from inferpack.config.triton_config import TRITON_CONFIG_FILE, parse_triton_config
from inferpack.errors import ConfigError, NotFoundError

CONFIG_FILE = "model.yaml"
# A model folder is configured by one of these; the first present wins (docs/triton-repository.md).
CONFIG_FILES = (CONFIG_FILE, TRITON_CONFIG_FILE)
ARTIFACT_FIELDS = "model.yaml artifact, config.pbtxt default_model_filename"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Everything a backend needs to load one version of a model."""

    config: ModelConfig
    version: str
    artifact_path: Path


def version_numbers(names: Iterable[str]) -> list[str]:
    """The numeric folder names among ``names``, oldest first (numeric order)."""
    return [str(n) for n in sorted(int(name) for name in names if name.isdigit())]


def choose_config_file(present: Iterable[str], folder: str) -> str | None:
    """The file that configures a model folder holding ``present``; warns when both do."""
    found = [name for name in CONFIG_FILES if name in set(present)]
    if len(found) > 1:
        log.warning("%s: has both %s; serving %s", folder, " and ".join(found), found[0])
    return found[0] if found else None


def parse_config_text(file_name: str, text: str, source: str, name: str) -> ModelConfig:
    """Validate the text of a model.yaml or config.pbtxt for the model folder ``name``."""
    if file_name == TRITON_CONFIG_FILE:
        return parse_triton_config(text, source, name)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{source}: not valid YAML: {error}"]) from None
    config = parse_model_config(raw, source, default_name=name)
    if config.name != name:
        raise ConfigError([f"{source}: name: {config.name!r} differs from its folder {name!r}"])
    return config


def versions_to_serve(config: ModelConfig, versions: list[str], where: str) -> list[str]:
    """Apply the version policy; a model without any version folder is a ConfigError."""
    if not versions:
        raise ConfigError([f"{where}: no version folder (e.g. 1/{config.artifact})"])
    return versions[-1:] if config.version_policy == "latest" else versions


MINIMAL_PYTHON_CONFIG = 'backend: "python"\n'


def _python_only(folder: Path) -> bool:
    """A folder with no config file whose version folders hold a model.py."""
    return folder.is_dir() and any(
        p.name.isdigit() and (p / "model.py").is_file() for p in folder.iterdir()
    )


class LocalRepository:
    def __init__(self, root: Path) -> None:
        self.root = root

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            raise ConfigError([f"{self.root}: model repository is not a directory"])
        return sorted(
            p.name
            for p in self.root.iterdir()
            if any((p / f).is_file() for f in CONFIG_FILES) or _python_only(p)
        )

    def config(self, name: str) -> ModelConfig:
        folder = self.root / name
        present = [f for f in CONFIG_FILES if (folder / f).is_file()]
        file_name = choose_config_file(present, str(folder))
        if file_name is None and _python_only(folder):
            # Triton's minimal configuration: the python backend, completed at load by the
            # model's auto_complete_config (docs/python-models.md).
            source = f"{folder} (no config file: a python model)"
            return parse_triton_config(MINIMAL_PYTHON_CONFIG, source, name)
        if file_name is None:
            raise NotFoundError(f"model {name!r} is not in repository {self.root}")
        path = folder / file_name
        return parse_config_text(file_name, path.read_text(), str(path), name)

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
                raise ConfigError([f"{path}: artifact missing ({ARTIFACT_FIELDS})"])
            sources.append(ModelSource(config, version, path))
        return sources
