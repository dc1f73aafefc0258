"""Server settings, read once from the CLI (never from the environment at import time)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# 64 MiB covers a batch of 64 fp32 images at 368x368x3 (~104 MB would not): large enough for
# real vision batches, small enough that one client cannot balloon the server's memory.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    model_repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
