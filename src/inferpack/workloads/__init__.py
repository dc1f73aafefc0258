"""Reference workloads: the seeds' models written in plain torch, with seeded weights.

The registry below is torch-free (names, tensors, defaults); each model's code lives in
its own module and imports torch only when a model is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from inferpack.config.model_config import DynamicBatchingConfig, ModelConfig
from inferpack.config.processing_config import (
    ClassificationOutput,
    EmbeddingOutput,
    ImageInput,
    PoseOutput,
    Postprocess,
    Preprocess,
    TextInput,
)
from inferpack.config.tensor_spec import TensorSpec
from inferpack.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What a workload takes and gives, and where its builder lives."""

    name: str
    builder: str  # "module:function", function(options) -> torch.nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    extra: str = "torch"
    description: str = ""
    # What `repo init` declares in model.yaml: uploads in, answers out (docs/processing.md).
    preprocess: Preprocess | None = None
    postprocess: Postprocess = Postprocess()  # noqa: RUF009 - frozen, shared safely
    # "module:function(folder) -> list[Path]": files the model folder needs (labels, tokenizer).
    files: str | None = None
    # Published weights: `repo init` builds it with options {"pretrained": true} (the
    # builder loads them) and saves them; serving builds it empty and loads the saved file.
    pretrained: bool = False

    def build(self, options: Mapping[str, Any]) -> torch.nn.Module:
        module_name, _, function_name = self.builder.partition(":")
        module = importlib.import_module(f"inferpack.workloads.{module_name}")
        factory: Callable[[Mapping[str, Any]], torch.nn.Module] = getattr(module, function_name)
        return factory(options)

    def default_config(self, name: str | None = None, seed: int = 0) -> ModelConfig:
        return ModelConfig(
            name=name or self.name,
            platform="workload",
            artifact="model.safetensors",
            workload=self.name,
            workload_options={"pretrained": False} if self.pretrained else {"seed": seed},
            inputs=self.inputs,
            outputs=self.outputs,
            max_batch_size=self.max_batch_size,
            # No added delay: batches still grow under load because a batch is formed only
            # when an instance is free; a delay only pays off when compute is batch-bound.
            dynamic_batching=DynamicBatchingConfig(max_queue_delay_us=0),
            preprocess=self.preprocess,
            postprocess=self.postprocess,
        )

    def write_files(self, folder: Any) -> list[Any]:
        """Write the extra files the model folder needs (labels, tokenizer)."""
        if self.files is None:
            return []
        module_name, _, function_name = self.files.partition(":")
        module = importlib.import_module(f"inferpack.workloads.{module_name}")
        written: list[Any] = getattr(module, function_name)(folder)
        return written


def _image(size: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec("input", "FP32", (3, size, size)),)


def _logits(classes: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec("logits", "FP32", (classes,)),)


# torchvision's ImageNet evaluation transform: shorter side 256, centre 224, ImageNet stats.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _imagenet(size: int, resize: int) -> ImageInput:
    return ImageInput(
        tensor="input", resize=resize, crop=(size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD
    )


def _classifier(labels: str | None) -> Postprocess:
    return Postprocess(classification=ClassificationOutput("logits", labels=labels, top_k=5))


_IMAGENET_LABELS = "labels.txt"


_IMAGENET_CLASSIFIER: dict[str, Any] = {
    "preprocess": _imagenet(224, 256),
    "postprocess": _classifier(_IMAGENET_LABELS),
    "files": "labels:write_imagenet_labels",
}

WORKLOADS: dict[str, WorkloadSpec] = {
    spec.name: spec
    for spec in (
        WorkloadSpec(
            "tiny-mlp",
            "small:tiny_mlp",
            (TensorSpec("input", "FP32", (16,)),),
            (TensorSpec("output", "FP32", (4,)),),
            64,
            description="1x16 -> 4 MLP",
        ),
        WorkloadSpec(
            "small-cnn",
            "small:small_cnn",
            _image(64),
            _logits(10),
            32,
            description="3 conv blocks on 3x64x64 -> 10 classes",
            preprocess=_imagenet(64, 72),
            postprocess=_classifier(None),
        ),
        WorkloadSpec(
            "medium-cnn",
            "small:medium_cnn",
            _image(64),
            _logits(100),
            32,
            description="5 conv blocks on 3x64x64 -> 100 classes, 483k parameters",
        ),
        WorkloadSpec(
            "squeezenet",
            "small:squeezenet",
            _image(224),
            _logits(1000),
            64,
            description="SqueezeNet 1.1",
            **_IMAGENET_CLASSIFIER,
        ),
        WorkloadSpec(
            "resnet50", "resnet:resnet50", _image(224), _logits(1000), 128, **_IMAGENET_CLASSIFIER
        ),
        WorkloadSpec("vgg19", "vgg:vgg19", _image(224), _logits(1000), 64, **_IMAGENET_CLASSIFIER),
        WorkloadSpec(
            "openpose",
            "openpose:openpose_body",
            _image(368),
            (
                TensorSpec("pafs", "FP32", (38, 46, 46)),
                TensorSpec("heatmaps", "FP32", (19, 46, 46)),
            ),
            32,
            description="OpenPose body: VGG19 base + 6 two-branch stages",
            # OpenPose's own input scaling: x / 256 - 0.5, the image resized to the input.
            preprocess=ImageInput(
                tensor="input", resize=(368, 368), mean=(0.5, 0.5, 0.5), scale=1 / 256
            ),
            postprocess=Postprocess(pose=PoseOutput("heatmaps", pafs="pafs")),
        ),
        WorkloadSpec(
            "minilm",
            "minilm:minilm",
            (
                TensorSpec("input_ids", "INT64", (-1,)),
                TensorSpec("attention_mask", "INT64", (-1,)),
            ),
            (TensorSpec("last_hidden_state", "FP32", (-1, 384)),),
            64,
            extra="text",
            description="all-MiniLM-L6-v2 sentence embeddings (published weights, 384-d)",
            preprocess=TextInput(max_length=256),
            postprocess=Postprocess(embedding=EmbeddingOutput("last_hidden_state")),
            files="minilm:write_tokenizer",
            pretrained=True,
        ),
        WorkloadSpec(
            "bert-base",
            "bert:bert_base",
            (
                TensorSpec("input_ids", "INT64", (128,)),
                TensorSpec("attention_mask", "INT64", (128,)),
            ),
            (TensorSpec("logits", "FP32", (2,)),),
            128,
            extra="text",
            description="BERT-base encoder + 2-class head, seq 128",
        ),
        WorkloadSpec(
            "sleep",
            "small:sleep",
            (TensorSpec("input", "FP32", (-1,)),),
            (TensorSpec("output", "FP32", (-1,)),),
            64,
            description="identity after sleeping workload_options.sleep_ms per batch",
        ),
    )
}


def get_workload(name: str) -> WorkloadSpec:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ConfigError([f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})"]) from None


def example_inputs(
    inputs: tuple[TensorSpec, ...], batch_size: int, seed: int = 0
) -> dict[str, npt.NDArray[np.generic]]:
    """Deterministic inputs for a batch: N(0,1) floats, token ids < 1000, masks of ones."""
    rng = np.random.default_rng(seed)
    result: dict[str, npt.NDArray[np.generic]] = {}
    for spec in inputs:
        shape = (batch_size, *(d if d > 0 else 8 for d in spec.dims))
        if spec.datatype.startswith("FP"):
            result[spec.name] = rng.standard_normal(shape).astype(np.float32)
        elif spec.name.endswith("mask"):
            result[spec.name] = np.ones(shape, dtype=np.int64)
        else:
            result[spec.name] = rng.integers(0, 1000, size=shape, dtype=np.int64)
    return result
