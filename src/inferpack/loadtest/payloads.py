"""Request bodies prepared before the clock starts: one per model, per transport.

Model metadata (input names, datatypes, shapes) comes from the server itself
(:mod:`.metadata`, which names why when it cannot); a leading -1 is the batch dim and takes
``batch_size``, other -1 dims take 1. Inputs are random but seeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferpack.datatypes import numpy_dtype, tensor_to_bytes
from inferpack.errors import InvalidInputError
from inferpack.loadtest.metadata import fetch_metadata


@dataclass(frozen=True, slots=True)
class Payload:
    """Everything one request to one model needs on the wire."""

    model: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _tensor(datatype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    if datatype == "BYTES":
        flat = np.empty(int(np.prod(shape)), dtype=np.object_)
        flat[:] = [b"x"] * flat.size
        return flat.reshape(shape)
    dtype = numpy_dtype(datatype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.integers(0, 100, size=shape).astype(dtype)


def _tensor_inputs(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inputs random tensors are made for. Beside numeric tensors, a BYTES input is an
    upload input (encoded images, text: what ``preprocess`` takes instead of the tensors,
    and what no random bytes can stand for), so it is left out; a model that takes only
    BYTES gets them (``--input-file`` sends real uploads)."""
    numeric = [spec for spec in inputs if spec["datatype"] != "BYTES"]
    return numeric or inputs


def _inputs(
    metadata: dict[str, Any], batch_size: int, seed: int
) -> list[tuple[str, str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    tensors = []
    for spec in _tensor_inputs(metadata["inputs"]):
        dims = [int(d) for d in spec["shape"]]
        if dims and dims[0] == -1:
            dims[0] = batch_size
        dims = [1 if d < 0 else d for d in dims]
        tensors.append((spec["name"], spec["datatype"], _tensor(spec["datatype"], dims, rng)))
    return tensors


def _http_json(model: str, tensors: list[tuple[str, str, np.ndarray]]) -> Payload:
    inputs = []
    for name, datatype, array in tensors:
        flat = array.reshape(-1)
        data = [x.decode() for x in flat] if datatype == "BYTES" else flat.tolist()
        inputs.append(
            {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
        )
    body = json.dumps({"inputs": inputs}).encode()
    return Payload(model, body, (("Content-Type", "application/json"),))


def _http_binary(model: str, tensors: list[tuple[str, str, np.ndarray]]) -> Payload:
    raws = [tensor_to_bytes(array) for _, _, array in tensors]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
                for (name, datatype, array), raw in zip(tensors, raws, strict=True)
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = (
        ("Inference-Header-Content-Length", str(len(header))),
        ("Content-Type", "application/octet-stream"),
    )
    return Payload(model, header + b"".join(raws), headers)


def _grpc(model: str, tensors: list[tuple[str, str, np.ndarray]]) -> Payload:
    from inferpack.protocol.proto import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    for name, datatype, array in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(tensor_to_bytes(array))
    return Payload(model, request.SerializeToString())


def file_inputs(
    files: tuple[tuple[str, str], ...], batch_size: int, transport: str
) -> list[tuple[str, str, np.ndarray]]:
    """BYTES [batch_size, 1] inputs, every row one file's bytes (an upload per row)."""
    tensors = []
    for name, path in files:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise InvalidInputError(f"--input-file {name}={path}: {error.strerror}") from None
        if transport == "http-json":
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInputError(
                    f"--input-file {name}={path}: not UTF-8 text, so JSON cannot carry it: "
                    "send binary tensors (drop --no-binary) or use gRPC"
                ) from None
        column = np.empty((batch_size, 1), dtype=np.object_)
        column[:, 0] = [data] * batch_size
        tensors.append((name, "BYTES", column))
    return tensors


def build_payloads(
    url: str,
    transport: str,
    models: tuple[str, ...],
    batch_size: int,
    seed: int,
    *,
    input_files: tuple[tuple[str, str], ...] = (),
) -> list[Payload]:
    """One prepared request per model, in the order of ``models``: random tensors shaped
    by the model's metadata, or the given files as BYTES inputs. Each model's metadata is
    asked for either way: an unreachable server or an unknown model stops the test here,
    named, instead of as errors counted by the workers."""
    encode = {"http-json": _http_json, "http-binary": _http_binary, "grpc": _grpc}[transport]
    files = file_inputs(input_files, batch_size, transport) if input_files else None
    payloads = []
    for index, model in enumerate(models):
        metadata = fetch_metadata(url, transport, model)
        tensors = files if files is not None else _inputs(metadata, batch_size, seed + index)
        payloads.append(encode(model, tensors))
    return payloads
