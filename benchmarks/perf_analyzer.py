"""Triton's perf_analyzer as a subprocess: find it, run it, read its CSV.

The binary ships inside the ``tritonclient`` wheel of the dev extra (installed beside the
venv's python). It links ``libb64.so.0d`` (Debian package ``libb64-0d``, which
scripts/setup installs) and ``libcudart.so.12`` even on CPU-only machines (the
``nvidia-cuda-runtime-cu12`` wheel of the dev extra, put on ``LD_LIBRARY_PATH`` here).

perf_analyzer's CSV gives, per concurrency level, throughput and client percentiles and,
when the server answers the statistics extension, the server-side split (all times in us):
``Server Queue``, ``Server Compute Input``, ``Server Compute Infer``, ``Server Compute
Output``.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SERVER_COLUMNS = (
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
)


class PerfAnalyzerUnavailableError(RuntimeError):
    """The binary is absent or cannot start here; the message says why."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """A runnable perf_analyzer: its path and the environment it needs."""

    path: Path
    env: dict[str, str]

    def run(self, args: list[str], timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        """Run with ``args``; raise RuntimeError with its output when it fails."""
        done = subprocess.run(
            [str(self.path), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"perf_analyzer {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done


def _cuda_runtime_lib() -> str | None:
    """The folder of libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel, if installed."""
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return str(folder) if folder.is_dir() else None


def find_perf_analyzer() -> PerfAnalyzer:
    """The venv's perf_analyzer (else one on PATH), checked to start; raises
    PerfAnalyzerUnavailableError naming what is missing."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    found = beside if beside.exists() else shutil.which("perf_analyzer")
    if found is None:
        raise PerfAnalyzerUnavailableError(
            "perf_analyzer not found: it ships in the tritonclient 2.41.0 wheel of the dev "
            "extra (pip install -e '.[dev]')"
        )
    env = dict(os.environ)
    cuda = _cuda_runtime_lib()
    if cuda:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (cuda, env.get("LD_LIBRARY_PATH")) if p)
    probe = subprocess.run(
        [str(found), "--version"], env=env, capture_output=True, text=True, check=False
    )
    if "error while loading shared libraries" in probe.stderr:
        raise PerfAnalyzerUnavailableError(
            f"perf_analyzer cannot start: {probe.stderr.strip()} (scripts/setup installs "
            "libb64-0d; the dev extra installs nvidia-cuda-runtime-cu12)"
        )
    return PerfAnalyzer(Path(found), env)


def read_csv(path: Path) -> list[dict[str, float]]:
    """perf_analyzer's ``-f`` report: one row per concurrency level, every value a number."""
    with path.open(newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
