"""The machine a result was measured on: CPU, GPU, driver, library versions, git SHA."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from inferpack import __version__


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        if found:
            return found.group(1).strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_sha() -> str:
    """The checkout's commit (``+dirty`` with local changes); INFERPACK_GIT_SHA overrides."""
    if os.environ.get("INFERPACK_GIT_SHA"):
        return os.environ["INFERPACK_GIT_SHA"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return f"{sha}+dirty" if sha and dirty else sha


def _gpu(device: str) -> dict[str, Any] | None:
    if not device.startswith("cuda"):
        return None
    index = int(device.partition(":")[2] or 0)
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        return {
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "driver": str(pynvml.nvmlSystemGetDriverVersion()),
            "memory_mb": round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20),
        }
    except Exception:  # no NVML: fall back to what torch knows
        import torch

        properties = torch.cuda.get_device_properties(index)
        return {"name": properties.name, "driver": "", "memory_mb": properties.total_memory / 2**20}


def describe(device: str) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpu": _gpu(device),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "inferpack": __version__,
        "git_sha": git_sha(),
        "platform": platform.platform(),
    }
