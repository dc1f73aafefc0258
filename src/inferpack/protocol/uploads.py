"""``POST /predictions/{model}`` for models with ``preprocess``: files in, answers out.

What is read as an upload (the model's ``preprocess`` says whether items are images or text):

- ``multipart/form-data``: each field named as the upload input (``images`` by default;
  ``text``) or ``data`` (TorchServe's own name) is one item, in order; many items are one
  batch. Other field names are refused, naming the accepted ones.
- JSON (``application/json``, or a body starting with ``{`` or ``[`` whose type is absent
  or generic, as curl's ``-d`` sends): for a text model, a string or a list of strings (or
  ``{"<input>": [...]}``); anything else is the tensor request of :mod:`.torchserve`.
- Any other body (``image/jpeg``, ``application/octet-stream``, ``text/plain``, curl's
  ``--data-binary`` of a file): the body is one item.

The answer is what the model's ``postprocess`` makes: ``{label: probability}`` top-k per
image, keypoints per image, an embedding per text, or the outputs as nested lists. One item
sent as a single upload gets its answer alone; several get a list in the order sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web

from inferpack.config.model_config import ModelConfig
from inferpack.config.processing_config import PEOPLE_OUTPUT, TextInput
from inferpack.errors import InvalidInputError, PayloadTooLargeError
from inferpack.protocol.body import read_counted_body
from inferpack.runtime.inflight import Reservation
from inferpack.types import InferRequest, InferResponse

TORCHSERVE_FIELD = "data"
_CHUNK_BYTES = 256 * 1024


@dataclass(slots=True)
class Upload:
    """The items of one upload request, and whether to answer the first alone."""

    items: list[bytes]
    single: bool


def is_upload(request: web.Request, config: ModelConfig) -> bool:
    """Whether the body goes to the upload path (else the JSON tensor path)."""
    if config.upload_input is None:
        return False
    if request.content_type == "application/json":
        return isinstance(config.preprocess, TextInput)  # a JSON string list, or tensors
    return True


async def read_upload(
    request: web.Request, config: ModelConfig, limit_bytes: int, reservation: Reservation
) -> Upload | None:
    """The upload's items; None when the body is JSON tensors instead (the caller reads it
    again: :func:`~inferpack.protocol.body.read_counted_body` keeps it)."""
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request, config, limit_bytes, reservation)
    body = await read_counted_body(request, limit_bytes, reservation)
    declared = request.content_type if "Content-Type" in request.headers else None
    if _is_json(declared, body):
        return _json_texts(body, config) if isinstance(config.preprocess, TextInput) else None
    return Upload([body], single=True)


def _is_json(content_type: str | None, body: bytes) -> bool:
    """JSON by its type, or by its first byte when the type is absent or says nothing
    (curl's ``-d`` sends form-urlencoded): no image format starts with ``{`` or ``[``. A
    declared image, binary or plain-text body is taken as it is."""
    if content_type == "application/json":
        return True
    if content_type is not None and (
        content_type.startswith(("image/", "text/")) or content_type == "application/octet-stream"
    ):
        return False
    return body.lstrip()[:1] in (b"{", b"[")


def _field_names(config: ModelConfig) -> tuple[str, ...]:
    assert config.upload_input is not None
    return (config.upload_input.name, TORCHSERVE_FIELD)


async def _read_multipart(
    request: web.Request, config: ModelConfig, limit_bytes: int, reservation: Reservation
) -> Upload:
    accepted = _field_names(config)
    items: list[bytes] = []
    total = 0
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise InvalidInputError("nested multipart bodies are not accepted")
        if part.name not in accepted:
            raise InvalidInputError(
                f"unexpected form field {part.name!r}: send each item as a field named "
                f"{accepted[0]!r} (or {accepted[1]!r})"
            )
        if len(items) == config.max_batch_size:
            raise PayloadTooLargeError(
                f"more than {config.max_batch_size} items in one request: model "
                f"{config.name!r} takes at most {config.max_batch_size} (max_batch_size)"
            )
        chunks: list[bytes] = []
        while chunk := await part.read_chunk(_CHUNK_BYTES):
            total += len(chunk)
            if total > limit_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {limit_bytes} bytes")
            reservation.grow_to(total)
            chunks.append(chunk)
        items.append(b"".join(chunks))
    if not items:
        raise InvalidInputError(f"no form field named {accepted[0]!r}: nothing to run")
    return Upload(items, single=len(items) == 1)


def _json_texts(body: bytes, config: ModelConfig) -> Upload | None:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"malformed JSON in request body: {error}") from None
    except RecursionError:
        raise InvalidInputError("request body nests too deep") from None
    assert config.upload_input is not None
    name = config.upload_input.name
    if isinstance(payload, dict) and name in payload:
        payload = payload[name]
    if isinstance(payload, str):
        return Upload([payload.encode()], single=True)
    if isinstance(payload, list) and payload and all(isinstance(t, str) for t in payload):
        return Upload([text.encode() for text in payload], single=False)
    if isinstance(payload, list) and not payload:
        raise InvalidInputError("the list of texts is empty")
    return None


def upload_request(upload: Upload, config: ModelConfig, version: str | None) -> InferRequest:
    assert config.upload_input is not None
    if len(upload.items) > config.max_batch_size:
        raise PayloadTooLargeError(
            f"{len(upload.items)} items in one request: model {config.name!r} takes at most "
            f"{config.max_batch_size} (max_batch_size)"
        )
    column = np.empty((len(upload.items), 1), dtype=np.object_)
    column[:, 0] = upload.items
    return InferRequest(
        config.name,
        {config.upload_input.name: column},
        model_version=version,
        requested_outputs=answer_outputs(config),
    )


def answer_outputs(config: ModelConfig) -> list[str] | None:
    """The outputs the answer is made of (None: all of them)."""
    post = config.postprocess
    if post.classification is not None:
        return [post.classification.output]
    if post.pose is not None:
        return [post.pose.name, PEOPLE_OUTPUT] if post.pose.pafs else [post.pose.name]
    if post.embedding is not None:
        return [post.embedding.name]
    return None


def render_answer(
    response: InferResponse, config: ModelConfig, single: bool, labels: Sequence[str] | None
) -> bytes:
    """The JSON answer: one entry per item (the entry alone when ``single``); ``labels``
    name the classes of a classifier (None: their indices)."""
    rows = _rows(response, config, labels)
    return json.dumps(rows[0] if single else rows).encode()


def _rows(response: InferResponse, config: ModelConfig, labels: Sequence[str] | None) -> list[Any]:
    post = config.postprocess
    outputs = response.outputs
    if post.classification is not None:
        from inferpack.processing.classify import top_k_json

        c = post.classification
        return top_k_json(outputs[c.output], c.top_k, labels, c.softmax)
    if post.pose is not None:
        from inferpack.processing.pose import COCO18_KEYPOINTS

        answers = [_keypoints(row, COCO18_KEYPOINTS) for row in outputs[post.pose.name]]
        if PEOPLE_OUTPUT in outputs:
            for answer, people in zip(answers, outputs[PEOPLE_OUTPUT][:, 0], strict=True):
                answer["people"] = json.loads(people)
        return answers
    if post.embedding is not None:
        return [row.tolist() for row in outputs[post.embedding.name]]
    count = next(iter(outputs.values())).shape[0]
    if len(outputs) == 1:
        only = next(iter(outputs.values()))
        return [row.tolist() for row in only]
    return [{name: array[i].tolist() for name, array in outputs.items()} for i in range(count)]


def _keypoints(row: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """Keypoints found (those under the threshold come back as x = y = -1 and are left out)."""
    found = {
        name: {"x": round(float(x), 2), "y": round(float(y), 2), "score": round(float(s), 4)}
        for name, (x, y, s) in zip(names, row, strict=False)
        if x >= 0 and y >= 0
    }
    return {"keypoints": found}
