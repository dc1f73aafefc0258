"""Our safetensors reader: same tensors as the library's, clear errors, and no leak."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file, save_file  # noqa: E402

from inferpack.errors import ConfigError  # noqa: E402
from inferpack.workloads.safetensors_io import read_safetensors  # noqa: E402

DTYPES = (
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
)


def _file(tmp_path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    tensors = {
        f"t{i}": (torch.randn(3, 5, generator=generator) * 50).to(dtype)
        for i, dtype in enumerate(DTYPES)
    }
    tensors["scalar"] = torch.tensor(2.5)
    tensors["empty"] = torch.zeros(0, 4)
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def test_reads_every_dtype_like_the_library(tmp_path: Path) -> None:
    path = _file(tmp_path)
    ours, theirs = read_safetensors(path), load_file(str(path))
    assert ours.keys() == theirs.keys()
    for name, expected in theirs.items():
        assert ours[name].dtype == expected.dtype
        assert ours[name].shape == expected.shape
        assert torch.equal(ours[name], expected), name


@pytest.mark.parametrize("cut", [4, 20, -7])
def test_truncated_file_is_a_config_error_naming_it(tmp_path: Path, cut: int) -> None:
    path = _file(tmp_path)
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(ConfigError, match=r"model\.safetensors"):
        read_safetensors(path)


def test_not_json_header_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes((5).to_bytes(8, "little") + b"{oops")
    with pytest.raises(ConfigError, match="not JSON"):
        read_safetensors(path)


def test_reading_many_times_does_not_grow_python_memory(tmp_path: Path) -> None:
    """safetensors' own torch reader keeps ~1.3 KB per read alive (2.5 MB per 2,000)."""
    path = _file(tmp_path)
    for _ in range(50):
        read_safetensors(path)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(1000):
            read_safetensors(path)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 64 * 1024, f"{grown} bytes still held after 1,000 reads"
