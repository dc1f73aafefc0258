"""Where a compiled model goes, and putting it there only once it is accepted.

model.yaml is per model (``<model>/model.yaml``, one platform for all its versions), so a
compiled model whose platform differs (onnx, torch_aoti) cannot be a version of its
source: it is written as a model of its own, ``<model>-<mode>-<precision>``, next to the
source (docs/compile.md). Its version is the next integer after those already there (1 for
a new folder), or the one asked for.

Everything is built in a staging folder inside the repository (same filesystem: the moves
are renames) whose top level holds no model.yaml, so a server watching the repository
never takes it for a model. On success the version folder is moved into place, then
model.yaml replaced atomically; on any failure the staging folder is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from inferpack.compile.spec import AHEAD_OF_TIME_MODES, CompileSpec, CompileUsageError
from inferpack.config.compile_config import CompileConfig
from inferpack.config.model_config import (
    PLATFORMS,
    InstanceConfig,
    ModelConfig,
    model_config_to_dict,
)
from inferpack.repository.local import CONFIG_FILE, version_numbers

_PLATFORM_BY_MODE = {"onnx": "onnx", "export": "torch_aoti"}


def next_version(folder: Path, requested: int | None) -> str:
    """``requested`` if that version is free, else usage error; or max existing + 1."""
    existing = (
        version_numbers(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    )
    if requested is not None:
        if str(requested) in existing:
            raise CompileUsageError([f"--version: {folder / str(requested)} already exists"])
        return str(requested)
    return str(int(existing[-1]) + 1) if existing else "1"


def compiled_config(
    spec: CompileSpec, source: ModelConfig, buckets: tuple[int, ...]
) -> ModelConfig:
    """The compiled model's model.yaml: the source's tensors and batching, on the target.

    Ahead-of-time artifacts take fp32 I/O (the compute precision is inside the graph) and
    keep ``compile.mode: none``; inductor/cudagraphs keep the source artifact and compile
    at load at ``precision``."""
    common = dataclasses.replace(
        source,
        name=spec.output_model,
        instances=InstanceConfig(count=source.instances.count, device=spec.target),
        storage_precision=None,
    )
    if spec.mode in AHEAD_OF_TIME_MODES:
        platform = _PLATFORM_BY_MODE[spec.mode]
        return dataclasses.replace(
            common, platform=platform, artifact=PLATFORMS[platform], workload=None,
            workload_options={}, precision="fp32", compile=CompileConfig("none", buckets),
        )  # fmt: skip
    compile_config = CompileConfig(spec.mode, buckets, spec.channels_last)
    return dataclasses.replace(common, precision=spec.precision, compile=compile_config)


@dataclass(frozen=True, slots=True)
class Staged:
    """A compiled model version being built: ``version_dir`` holds the artifact."""

    root: Path
    model: str
    version: str

    @property
    def model_dir(self) -> Path:
        return self.root / self.model

    @property
    def version_dir(self) -> Path:
        return self.model_dir / self.version

    def write_config(self, config: ModelConfig, source_dir: Path) -> None:
        """model.yaml, and the files its processing reads (labels, tokenizer) copied from
        the source model's folder."""
        text = yaml.safe_dump(model_config_to_dict(config), sort_keys=False)
        (self.model_dir / CONFIG_FILE).write_text(text)
        for name in config.folder_files():
            shutil.copy2(source_dir / name, self.model_dir / name)


@contextlib.contextmanager
def staging(repository: Path, model: str, version: str) -> Iterator[Staged]:
    """A staging folder inside ``repository``, removed on exit whatever happens."""
    root = Path(tempfile.mkdtemp(prefix=".inferpack-compile-", dir=repository))
    try:
        staged = Staged(root, model, version)
        staged.version_dir.mkdir(parents=True)
        yield staged
    finally:
        shutil.rmtree(root, ignore_errors=True)


def link_or_copy(source: Path, destination: Path) -> None:
    """A hard link to ``source`` (no second copy of the weights), a copy across devices."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def commit(staged: Staged, repository: Path) -> Path:
    """Move the staged version into ``repository``; return its folder there."""
    target = repository / staged.model
    if not target.exists():
        staged.model_dir.rename(target)
        return target / staged.version
    destination = target / staged.version
    if destination.exists():
        raise CompileUsageError([f"{destination} appeared while compiling: not replaced"])
    staged.version_dir.rename(destination)
    for name in (*config_files(staged.model_dir), CONFIG_FILE):
        os.replace(staged.model_dir / name, target / name)
    return destination


def config_files(model_dir: Path) -> list[str]:
    """Files beside model.yaml other than it (labels, tokenizer)."""
    return sorted(p.name for p in model_dir.iterdir() if p.is_file() and p.name != CONFIG_FILE)
