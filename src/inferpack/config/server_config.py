"""Server settings, read once from the CLI (never from the environment at import time)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inferpack.config.control import ControlConfig

# 64 MiB covers a batch of 64 fp32 images at 368x368x3 (~104 MB would not): large enough for
# real vision batches, small enough that one client cannot balloon the server's memory.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# 256 MiB of bodies in flight (4 bodies at the default limit, ~3,000 85 KB tensor requests,
# ~390 85 KB JPEGs with their 224x224 FP32 rows, or 2 12 MP photos while they decode):
# decoding a tensor body holds at most ~2x a body beside it and an image's pixels are
# counted before they are allocated, so requests stay under ~1 GiB however many clients
# send at once, while a busy server still queues far more work than it can run.
DEFAULT_MAX_INFLIGHT_BYTES = 4 * DEFAULT_MAX_REQUEST_BYTES


@dataclass(frozen=True, slots=True)
class ServerConfig:
    model_repository: str  # a folder, or s3:// gs:// http(s):// (fetched into cache_dir)
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = 8001  # None: no gRPC endpoint
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Request bodies being decoded, queued or run, and the pixels their images decode to,
    # all protocols together (429 above).
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    control: ControlConfig = field(default_factory=ControlConfig)
    cache_dir: Path | None = None  # remote repositories; default: the per-user cache folder
    # Bearer token the repository API (/v2/repository/*, Repository* RPCs) requires. None:
    # the API is open on a loopback host and refused on any other (see protocol.access).
    repository_api_token: str | None = field(default=None, repr=False)  # a secret
