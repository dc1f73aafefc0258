"""A model's pre- and post-processing, built once per loaded model from its model.yaml.

Where each step runs, and why (the runtime drives it: :mod:`inferpack.runtime.served_model`):

- **Uploads are decoded per request, each image on its own task of the processing pool,
  before the request is queued.** A corrupt upload then fails its own request only (decoding
  inside the batch would fail every request batched with it), decoding overlaps the batch
  running on the model, and a request of 32 images decodes on every core at once.
- **The decoded tensors are batched with the model**: they join the dynamic batcher like any
  tensor request, so uploads and tensor requests of the same shape share batches.
- **Post-processing runs per request on the processing pool** after its rows come back:
  it needs what only the request knows (where its image was cropped, its token mask).

Everything here is blocking numpy/Pillow/tokenizers work, called from threads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inferpack.config.model_config import ModelConfig
from inferpack.config.processing_config import PEOPLE_OUTPUT, ImageInput, TextInput
from inferpack.datatypes import numpy_dtype
from inferpack.errors import InvalidInputError
from inferpack.processing.image import (
    Charge,
    ImagePreprocess,
    ImageTransform,
    image_tensor,
    preprocess_image,
)
from inferpack.types import Tensor

Outputs = dict[str, Tensor]
CoordinateMap = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(slots=True)
class Prepared:
    """A request's model inputs made from its uploads, and what post-processing needs."""

    inputs: dict[str, Tensor]
    transforms: list[ImageTransform] | None = None


@dataclass(slots=True)
class Pipeline:
    """Labels and tokenizer loaded; the image transform resolved from the config."""

    config: ModelConfig
    labels: tuple[str, ...] | None = None
    image: ImagePreprocess | None = None
    encoder: object | None = None  # processing.text.TextEncoder (tokenizers loaded lazily)
    _label_outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, config: ModelConfig, folder: Path) -> Pipeline:
        """Blocking: read the label file and tokenizer from the model folder."""
        pipeline = cls(config)
        pre = config.preprocess
        if isinstance(pre, ImageInput):
            spec = config.input(pre.tensor)
            pipeline.image = image_preprocess(pre, spec.datatype if spec else "FP32")
        elif isinstance(pre, TextInput):
            from inferpack.processing.text import TextEncoder

            pipeline.encoder = TextEncoder.shared(folder / pre.tokenizer, pre.max_length)
        classification = config.postprocess.classification
        if classification is not None and classification.labels:
            from inferpack.processing.classify import load_labels

            pipeline.labels = load_labels(folder, classification.labels)
            pipeline._label_outputs[classification.output] = pipeline.labels
        return pipeline

    def labels_for(self, output: str) -> tuple[str, ...] | None:
        return self._label_outputs.get(output)

    # -- pre-processing -------------------------------------------------------------------

    def upload_items(self, inputs: dict[str, Tensor]) -> list[object] | None:
        """The request's upload rows (encoded images or strings), or None when it sends the
        model's tensors instead. Checks the upload's shape and that nothing else is sent."""
        spec = self.config.upload_input
        if spec is None or spec.name not in inputs:
            return None
        others = sorted(set(inputs) - {spec.name})
        if others:
            raise InvalidInputError(
                f"model {self.config.name!r}: send either {spec.name!r} or the model's tensors "
                f"{[s.name for s in self.config.inputs]}, not both (got {others} too)"
            )
        array = inputs[spec.name]
        if self.image is not None and array.dtype == np.uint8:
            return self._pixel_rows(spec.name, array)
        if array.dtype != np.object_:
            what = "BYTES (encoded images) or UINT8 [n, H, W, 3]" if self.image else "BYTES"
            raise InvalidInputError(f"input {spec.name!r} must be {what}, got {array.dtype}")
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InvalidInputError(
                f"input {spec.name!r}: shape {list(inputs[spec.name].shape)} must be [n] or [n, 1]"
                " (one item per row)"
            )
        if not 1 <= len(array) <= self.config.max_batch_size:
            raise InvalidInputError(
                f"input {spec.name!r}: {len(array)} items, the model takes 1 to "
                f"{self.config.max_batch_size} per request (max_batch_size)"
            )
        return list(array)

    def _pixel_rows(self, name: str, array: Tensor) -> list[object]:
        """Decoded RGB pixels (UINT8 [n, H, W, 3], e.g. frames from a camera pipeline): taken
        as they are, then resized, cropped and normalised as a decoded upload would be."""
        assert self.image is not None
        if array.ndim != 4 or array.shape[3] != 3:
            raise InvalidInputError(
                f"input {name!r}: UINT8 pixels must be [n, H, W, 3] (RGB), got {list(array.shape)}"
            )
        if not 1 <= array.shape[0] <= self.config.max_batch_size:
            raise InvalidInputError(
                f"input {name!r}: {array.shape[0]} images, the model takes 1 to "
                f"{self.config.max_batch_size} per request (max_batch_size)"
            )
        if array.shape[1] * array.shape[2] > self.image.max_pixels:
            raise InvalidInputError(
                f"input {name!r}: {array.shape[2]}x{array.shape[1]} images exceed "
                f"{self.image.max_pixels} pixels (preprocess.image.max_pixels)"
            )
        return list(array)

    def image_row(
        self, item: object, index: int, charge: Charge | None = None
    ) -> tuple[Tensor, ImageTransform]:
        """One upload row to one model row (a processing-pool task); ``charge`` counts what
        it allocates (decoded pixels, the row) in the server's in-flight cap."""
        assert self.image is not None
        if isinstance(item, np.ndarray):
            row, transform = preprocess_image(item, self.image, index)
            if charge is not None:
                charge(row.nbytes)
            return row, transform
        if isinstance(item, str):
            item = item.encode("latin-1", errors="strict")
        if not isinstance(item, bytes | bytearray | memoryview):
            raise InvalidInputError(f"image {index} must be bytes, got {type(item).__name__}")
        return image_tensor(bytes(item), self.image, index, charge)

    def stack_images(self, rows: Sequence[tuple[Tensor, ImageTransform]]) -> Prepared:
        tensor_name = self._image_tensor()
        shapes = {row.shape for row, _ in rows}
        if len(shapes) > 1:
            raise InvalidInputError(
                f"images of one request must make tensors of one shape, got {sorted(shapes)}: "
                "configure resize and crop to a fixed size"
            )
        stacked = np.stack([row for row, _ in rows]) if len(rows) > 1 else rows[0][0][None]
        return Prepared({tensor_name: stacked}, [transform for _, transform in rows])

    def _image_tensor(self) -> str:
        pre = self.config.preprocess
        assert isinstance(pre, ImageInput)
        return pre.tensor

    def text_inputs(self, items: Sequence[object]) -> Prepared:
        """Strings to token tensors (one processing-pool task per request)."""
        from inferpack.processing.text import TextEncoder, decode_texts

        pre = self.config.preprocess
        assert isinstance(pre, TextInput) and isinstance(self.encoder, TextEncoder)
        array = np.empty(len(items), dtype=np.object_)
        array[:] = list(items)
        encoded = self.encoder.encode(
            decode_texts(array),
            pad_to_multiple_of=pre.pad_to_multiple_of,
            with_type_ids=pre.type_ids is not None,
        )
        inputs: dict[str, Tensor] = {}
        for spec in self.config.inputs:
            key = {pre.ids: "input_ids", pre.mask: "attention_mask"}.get(spec.name)
            if key is None and spec.name == pre.type_ids:
                key = "token_type_ids"
            if key is None:
                continue
            inputs[spec.name] = _fit_length(encoded[key], spec.dims[0], spec.name).astype(
                numpy_dtype(spec.datatype), copy=False
            )
        return Prepared(inputs)

    # -- post-processing ------------------------------------------------------------------

    def adds_outputs(self) -> bool:
        post = self.config.postprocess
        return post.pose is not None or post.embedding is not None

    def finish(
        self, inputs: dict[str, Tensor], outputs: Outputs, prepared: Prepared | None
    ) -> Outputs:
        """The outputs with those post-processing adds (a processing-pool task)."""
        post = self.config.postprocess
        result = dict(outputs)
        if post.pose is not None:
            from inferpack.processing.pose import keypoints_from_heatmaps

            heatmaps = outputs[post.pose.heatmaps]
            maps: list[CoordinateMap] | None = None
            if prepared is not None and prepared.transforms is not None:
                maps = [t.to_original for t in prepared.transforms]
            input_hw = self._input_hw(inputs)
            result[post.pose.name] = keypoints_from_heatmaps(
                heatmaps, input_hw, post.pose.threshold, maps
            )
            if post.pose.pafs is not None:
                result[PEOPLE_OUTPUT] = _people_json(
                    heatmaps, outputs[post.pose.pafs], input_hw, post.pose.threshold, maps
                )
        if post.embedding is not None:
            from inferpack.processing.embedding import cls_pool, mean_pool

            hidden = outputs[post.embedding.output]
            if post.embedding.pooling == "cls":
                result[post.embedding.name] = cls_pool(hidden, post.embedding.normalize)
            else:
                pre = self.config.preprocess
                assert isinstance(pre, TextInput)
                mask = inputs[pre.mask]
                result[post.embedding.name] = mean_pool(hidden, mask, post.embedding.normalize)
        return result

    def _input_hw(self, inputs: dict[str, Tensor]) -> tuple[int, int]:
        """Height and width of the model input the heatmaps were computed from."""
        spec = self.config.inputs[0]
        layout = self.image.layout if self.image is not None else "CHW"
        shape = inputs[spec.name].shape[1:]
        return (shape[1], shape[2]) if layout == "CHW" else (shape[0], shape[1])


def _people_json(
    heatmaps: Tensor,
    pafs: Tensor,
    input_hw: tuple[int, int],
    threshold: float,
    maps: list[CoordinateMap] | None,
) -> Tensor:
    """BYTES [n, 1]: each image's people as JSON ``[{keypoint: [x, y, score]}, ...]``."""
    from inferpack.processing.pose import people_from_pafs

    people = people_from_pafs(heatmaps, pafs, input_hw, threshold, maps)
    column = np.empty((len(people), 1), dtype=np.object_)
    for row, found in enumerate(people):
        rounded = [
            {name: [round(x, 2), round(y, 2), round(s, 4)] for name, (x, y, s) in p.items()}
            for p in found
        ]
        column[row, 0] = json.dumps(rounded).encode()
    return column


def image_preprocess(pre: ImageInput, datatype: str) -> ImagePreprocess:
    return ImagePreprocess(
        resize=pre.resize,
        crop=pre.crop,
        mean=pre.mean,
        std=pre.std,
        scale=pre.scale,
        layout=pre.layout,
        color=pre.color,
        datatype=datatype,
        max_pixels=pre.max_pixels,
        jpeg_draft=pre.jpeg_draft,
    )


def _fit_length(array: Tensor, length: int, name: str) -> Tensor:
    """Token rows padded (with 0: the pad id and mask of BERT-family tokenizers) to a fixed
    model length; a variable length (-1) keeps the tokenizer's."""
    if length < 0 or array.shape[1] == length:
        return array
    if array.shape[1] > length:
        raise InvalidInputError(
            f"input {name!r}: the text makes {array.shape[1]} tokens, the model takes {length}"
        )
    padded = np.zeros((array.shape[0], length), dtype=array.dtype)
    padded[:, : array.shape[1]] = array
    return padded


def classify(
    outputs: Outputs, wanted: dict[str, int], labels_for: Callable[[str], Sequence[str] | None]
) -> Outputs:
    """Triton's classification extension: each output named in ``wanted`` replaced by its
    top-k as BYTES ``"score:index[:label]"``."""
    from inferpack.processing.classify import triton_classification

    result = dict(outputs)
    for name, k in wanted.items():
        array = result[name]
        if array.dtype == np.object_ or array.ndim < 1:
            raise InvalidInputError(f"output {name!r} cannot be classified: it is not numeric")
        result[name] = triton_classification(array.reshape(array.shape[0], -1), k, labels_for(name))
    return result
