"""pyproject's lower bounds admit only runtimes that the generated gRPC stubs accept."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "src" / "inferpack" / "protocol" / "proto"


def _lower_bound(package: str) -> Version:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == package:
            bounds = [s.version for s in requirement.specifier if s.operator in (">=", "==")]
            assert bounds, f"{package} has no lower bound in pyproject.toml"
            return Version(bounds[0])
    raise AssertionError(f"{package} is not a dependency in pyproject.toml")


def test_protobuf_lower_bound_covers_the_gencode_version() -> None:
    text = (PROTO / "inference_pb2.py").read_text()
    found = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", text)
    assert found, "inference_pb2.py does not validate its runtime version"
    gencode = Version(".".join(found.groups()))
    assert _lower_bound("protobuf") >= gencode


def test_grpcio_lower_bound_covers_the_generated_stubs() -> None:
    text = (PROTO / "inference_pb2_grpc.py").read_text()
    found = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", text)
    assert found, "inference_pb2_grpc.py does not name the grpcio it was generated for"
    assert _lower_bound("grpcio") >= Version(found.group(1))
