"""``inferpack compile`` end to end: check, convert (or reuse), verify, write.

check the request and the target          → CompileUsageError (nothing done)
stage <repo>/.inferpack-compile-*/<name>/<version>/
artifact: cached, or exported and cached  (onnx, export); a link to the source
                                          artifact (inductor, cudagraphs)
load it with the server's loader, warm up → load_s
compare with fp32 eager per bucket        → accuracy.json beside the artifact
outside tolerance and not allowed         → nothing written (result.written False)
else move into place                      → <repo>/<name>/<version>/
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from inferpack.backends import Backend, load_backends
from inferpack.compile.accuracy_check import check, load_candidate
from inferpack.compile.cache import CompileCache, cache_key
from inferpack.compile.exporters import Exported, example_args, export_aoti, export_onnx, io_wrapper
from inferpack.compile.spec import AHEAD_OF_TIME_MODES, CompileSpec, CompileUsageError
from inferpack.compile.tolerance import Violation, tolerance_dict, violations
from inferpack.compile.writer import (
    Staged,
    commit,
    compiled_config,
    link_or_copy,
    next_version,
    staging,
)
from inferpack.config.compile_config import CompileConfig
from inferpack.config.model_config import InstanceConfig
from inferpack.repository import LocalRepository, ModelSource

ACCURACY_FILE = "accuracy.json"


class Reporter(Protocol):
    """What the CLI shows while compiling."""

    def stage(self, text: str) -> None: ...

    def bucket(self, batch_size: int, total: int) -> None:
        """One bucket checked (``total`` buckets in all)."""


@dataclass(slots=True)
class CompileResult:
    model: str
    version: str
    report: dict[str, Any]
    violations: list[Violation] = field(default_factory=list)
    path: Path | None = None  # the version folder written; None when refused

    @property
    def written(self) -> bool:
        return self.path is not None


def target_problems(spec: CompileSpec) -> list[str]:
    import torch

    if spec.target == "cuda" and not torch.cuda.is_available():
        return ["--target cuda: CUDA is not available on this machine (torch sees no GPU)"]
    return []


def compile_model(
    spec: CompileSpec, reporter: Reporter, cache: CompileCache | None = None
) -> CompileResult:
    """Compile ``spec.model`` (module docstring); raise CompileUsageError / CompileError."""
    problems = spec.problems()
    if problems:
        raise CompileUsageError(problems)
    problems = target_problems(spec)
    source = LocalRepository(spec.repository).sources(spec.model)[-1]
    problems += spec.model_problems(source.config)
    if problems:
        raise CompileUsageError(problems)
    buckets = spec.buckets_for(source.config)
    config = compiled_config(spec, source.config, buckets)
    version = next_version(spec.repository / spec.output_model, spec.version)
    with staging(spec.repository, spec.output_model, version) as staged:
        artifact = staged.version_dir / config.artifact
        reporter.stage(f"building {spec.mode} ({spec.precision}, {spec.target})")
        build = _build(spec, source, artifact, cache or CompileCache.default())
        staged.write_config(config, source.artifact_path.parent.parent)
        candidate_source = ModelSource(
            dataclasses.replace(config, instances=InstanceConfig(1, spec.device)), version, artifact
        )
        reporter.stage("loading the compiled model and the fp32 eager reference")
        reference = load_backends(_reference(source, spec.device))[0]
        candidate, load_s = load_candidate(candidate_source, spec.seed)
        try:
            done = _bucket_callback(reporter, max(len(buckets), 1))
            per_bucket, overall = check(
                reference, candidate, config, buckets=buckets, seed=spec.seed, on_bucket=done
            )
        finally:
            _close(reference, candidate)
        found = violations(overall, spec.precision)
        report = _report(
            spec,
            source,
            version=version,
            build=build,
            load_s=load_s,
            per_bucket=per_bucket,
            overall=overall,
            found=found,
        )
        result = CompileResult(spec.output_model, version, report, found)
        if found and not spec.allow_accuracy_loss:
            return result
        _write_report(staged, report)
        result.path = commit(staged, spec.repository)
        return result


@dataclass(frozen=True, slots=True)
class _Build:
    exporter: str
    cached: bool
    compile_s: float


def _build(spec: CompileSpec, source: ModelSource, artifact: Path, cache: CompileCache) -> _Build:
    """The artifact at ``artifact``: exported, reused from the cache, or linked."""
    import torch

    began = time.perf_counter()
    if spec.mode not in AHEAD_OF_TIME_MODES:
        link_or_copy(source.artifact_path, artifact)
        return _Build(f"torch.compile at load ({spec.mode})", False, 0.0)
    key = cache_key(spec, source, torch.__version__)
    exporter = "torch.export + AOTInductor" if spec.mode == "export" else "torch.onnx"
    if cache.fetch(key, artifact.name, artifact):
        return _Build(exporter, True, time.perf_counter() - began)
    exported = _export(spec, source, artifact)
    cache.put(key, artifact)
    return _Build(exported.exporter, False, time.perf_counter() - began)


def _export(spec: CompileSpec, source: ModelSource, artifact: Path) -> Exported:
    from inferpack.backends.torch_backend import _load_module

    reference = _reference(source, spec.device)
    module = io_wrapper(_load_module(reference, spec.device), spec.precision, spec.channels_last)
    args = example_args(source.config, spec.device, spec.seed)
    exporter = export_aoti if spec.mode == "export" else export_onnx
    return exporter(module, source.config, args, artifact)


def _reference(source: ModelSource, device: str) -> ModelSource:
    """The source model as fp32 eager on ``device``: one instance, weights at fp32."""
    config = dataclasses.replace(
        source.config,
        precision="fp32",
        storage_precision=None,
        compile=CompileConfig(),
        instances=InstanceConfig(1, device),
    )
    return dataclasses.replace(source, config=config)


def _bucket_callback(reporter: Reporter, total: int) -> Callable[[int], None]:
    return lambda size: reporter.bucket(size, total)


def _close(*backends: Backend) -> None:
    for backend in backends:
        backend.close()


def _report(
    spec: CompileSpec,
    source: ModelSource,
    *,
    version: str,
    build: _Build,
    load_s: float,
    per_bucket: list[dict[str, object]],
    overall: dict[str, object],
    found: list[Violation],
) -> dict[str, Any]:
    import torch

    return {
        "model": spec.output_model,
        "version": version,
        "source": {"model": spec.model, "version": source.version},
        "mode": spec.mode,
        "target": spec.target,
        "precision": spec.precision,
        "batch_buckets": [b["batch_size"] for b in per_bucket if b["batch_size"]],
        "channels_last": spec.channels_last,
        "seed": spec.seed,
        "exporter": build.exporter,
        "cached": build.cached,
        "compile_s": round(build.compile_s, 3),
        "load_s": round(load_s, 3),
        "torch_version": torch.__version__,
        "reference": "fp32 eager (torch)",
        "tolerance": tolerance_dict(spec.precision),
        "overall": overall,
        "buckets": per_bucket,
        "within_tolerance": not found,
        "violations": [v.describe() for v in found],
        "accepted_with_accuracy_loss": bool(found) and spec.allow_accuracy_loss,
    }


def _write_report(staged: Staged, report: dict[str, Any]) -> None:
    text = json.dumps(report, indent=2, default=str) + "\n"
    (staged.version_dir / ACCURACY_FILE).write_text(text)
