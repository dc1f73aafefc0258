"""N copies of one model with distinct weights, as a fleet server holds N customers' models.

Why distinct: the server's tensor store keeps identical weights once (content-addressed,
``backends/tensor_store.py``), and loads of the same artifact share one module. N byte-equal
copies would cost the memory of one and run from one set of warm caches, which flatters
both numbers for a fleet of customer-specific models that share nothing. So copy ``i``
has the low bit of the mantissa of element ``k`` of every floating tensor flipped for each
bit ``k`` set in ``i``: every weight moves by at most one ulp (the outputs are the model's
within float rounding), copy 0 is the original, and any two copies differ in every tensor
of more than log2(N) elements, which covers every tensor the store would share (it shares
only storages of at least ``MIN_SHARED_BYTES`` = 1 KiB).

Only safetensors artifacts (platform ``workload``) are perturbed: the bytes of a
TorchScript or torch.export archive are not edited here, so such copies are byte-equal and
:func:`make_copies` says so (the caller warns that latency is then optimistic).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import yaml

from inferpack.errors import ConfigError
from inferpack.repository import LocalRepository
from inferpack.repository.local import CONFIG_FILE

SAFETENSORS_SUFFIX = ".safetensors"
# safetensors dtype -> the unsigned integer of its width (the bits flipped).
_FLOAT_BITS = {"F64": np.uint64, "F32": np.uint32, "F16": np.uint16, "BF16": np.uint16}


def copy_names(model: str, count: int) -> tuple[str, ...]:
    return tuple(f"{model}-{index}" for index in range(count))


def make_copies(source: Path, model: str, count: int, target: Path) -> tuple[tuple[str, ...], bool]:
    """Write ``count`` copies of ``source``/``model`` into the repository folder ``target``;
    return their names and whether their weights are distinct."""
    config = LocalRepository(source).config(model)  # validates model.yaml first
    distinct = config.artifact.endswith(SAFETENSORS_SUFFIX)
    names = copy_names(model, count)
    for index, name in enumerate(names):
        folder = target / name
        shutil.copytree(source / model, folder)
        _rename(folder / CONFIG_FILE, name)
        if distinct:
            for artifact in folder.glob(f"*/{config.artifact}"):
                perturb_safetensors(artifact, index)
    return names, distinct or count == 1


def _rename(path: Path, name: str) -> None:
    data = yaml.safe_load(path.read_text())
    data["name"] = name
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def perturb_safetensors(path: Path, index: int) -> None:
    """Flip the mantissa's low bit of element k of each floating tensor for each bit k of
    ``index`` (in place); index 0 leaves the file as it is."""
    if index == 0:
        return
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError([f"{path}: safetensors header is not JSON: {error}"]) from None
    base = 8 + length
    flips = np.array([bit for bit in range(index.bit_length()) if index >> bit & 1])
    for name, entry in header.items():
        unsigned = _FLOAT_BITS.get(entry.get("dtype")) if name != "__metadata__" else None
        if unsigned is None:
            continue
        begin, end = entry["data_offsets"]
        values = np.frombuffer(
            data,
            dtype=unsigned,
            count=(end - begin) // np.dtype(unsigned).itemsize,
            offset=base + begin,
        )
        chosen = flips[flips < len(values)]
        values[chosen] ^= unsigned(1)
    path.write_bytes(bytes(data))
