"""``model.yaml``: what a model is, how it is batched, where and at which precision it runs.

Parsing collects every problem before failing, each naming the file and the field, so a
user fixes a configuration in one pass (:class:`inferpack.errors.ConfigError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from inferpack.config.compile_config import CompileConfig, compile_to_dict, parse_compile
from inferpack.config.processing_config import (
    IMAGENET1K,
    ImageInput,
    Postprocess,
    Preprocess,
    check_processing,
    derived_outputs,
    parse_postprocess,
    parse_preprocess,
    postprocess_to_dict,
    preprocess_to_dict,
)
from inferpack.config.tensor_spec import TensorSpec
from inferpack.datatypes import DATATYPES
from inferpack.errors import ConfigError

PLATFORMS: Final[dict[str, str]] = {
    # platform -> default artifact file inside <model>/<version>/
    "torchscript": "model.pt",
    "torch_export": "model.pt2",
    "workload": "model.safetensors",
    "torch_aoti": "model.pt2",  # torch.export + AOTInductor package (inferpack compile)
    "onnx": "model.onnx",  # ONNX Runtime
    "python": "model.py",  # the user's own Python (docs/python-models.md)
}
# How a model's instances run: threads of the server (the default), or, for python models,
# one worker process each (isolation: docs/python-models.md).
INSTANCE_KINDS: Final[frozenset[str]] = frozenset({"thread", "process"})
# Scheduling priority of process instances (Unix nice, 0-19): below the server's by default,
# so a CPU-bound worker yields a contended core to the event loop and the other models
# (docs/python-models.md has the measurement that chose it).
DEFAULT_PROCESS_NICE: Final = 10
PRECISIONS: Final[frozenset[str]] = frozenset({"fp32", "bf16", "fp16"})
# Narrower than fp32: what weights may be kept in while computing in fp32.
STORAGE_PRECISIONS: Final[frozenset[str]] = frozenset({"bf16", "fp16"})
# Bounded by default: admission control instead of unbounded memory growth under overload.
DEFAULT_MAX_QUEUE_SIZE: Final = 1024


@dataclass(frozen=True, slots=True)
class DynamicBatchingConfig:
    """Triton-like dynamic batching; the delay counts from the oldest queued request."""

    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """``count`` instances per model (each runs one batch at a time); device is cpu,
    cuda:N, cuda or auto; kind is thread or process (python models only)."""

    count: int = 1
    device: str = "auto"
    kind: str = "thread"
    nice: int = 0  # process instances only


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    artifact: str = ""
    workload: str | None = None
    workload_options: Mapping[str, Any] = field(default_factory=dict)
    dynamic_batching: DynamicBatchingConfig | None = None
    instances: InstanceConfig = InstanceConfig()
    precision: str = "fp32"
    # None: weights are kept at ``precision``; bf16/fp16: kept narrower, cast to
    # ``precision`` (fp32) layer by layer as each batch runs (docs/model-memory.md).
    storage_precision: str | None = None
    version_policy: str = "latest"
    warmup: bool = True
    compile: CompileConfig = CompileConfig()  # noqa: RUF009 - frozen, shared safely
    # Uploads to tensors, tensors to answers (docs/processing.md).
    preprocess: Preprocess | None = None
    postprocess: Postprocess = Postprocess()  # noqa: RUF009 - frozen, shared safely
    # Free-form string parameters (Triton's ``parameters``): python models read them.
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def batching(self) -> bool:
        """Whether the first dim of every tensor is a batch dim."""
        return self.max_batch_size > 0

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output_names(self) -> list[str]:
        """The model's own outputs (what a backend returns)."""
        return [spec.name for spec in self.outputs]

    @property
    def upload_input(self) -> TensorSpec | None:
        """The BYTES input ``preprocess`` adds (one encoded image or string per row)."""
        if self.preprocess is None:
            return None
        return TensorSpec(self.preprocess.input, "BYTES", (1,))

    def folder_files(self) -> list[str]:
        """Files of the model folder (beside model.yaml) that processing reads."""
        files = []
        if self.preprocess is not None and not isinstance(self.preprocess, ImageInput):
            files.append(self.preprocess.tokenizer)
        labels = self.postprocess.classification.labels if self.postprocess.classification else None
        if labels and labels != IMAGENET1K:
            files.append(labels)
        return files

    @property
    def served_outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs and those ``postprocess`` adds: what a client may ask for."""
        return self.outputs + derived_outputs(self.postprocess, self.outputs)


class _Problems:
    """Collects validation problems, each prefixed with the file it came from."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{self.source}: {where}: {what}")


def _int(raw: Mapping[str, Any], key: str, default: int, where: str, problems: _Problems) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.add(f"{where}{key}", f"must be a non-negative integer, got {value!r}")
        return default
    return value


def _tensor_specs(
    raw: Any, field_name: str, problems: _Problems, may_be_empty: bool = False
) -> tuple[TensorSpec, ...]:
    if may_be_empty and raw in (None, []):  # a python model's auto_complete_config adds them
        return ()
    if not isinstance(raw, list) or not raw:
        problems.add(field_name, "must be a non-empty list of {name, datatype, shape}")
        return ()
    specs: list[TensorSpec] = []
    for index, item in enumerate(raw):
        where = f"{field_name}[{index}]"
        if not isinstance(item, Mapping):
            problems.add(where, f"must be a mapping, got {item!r}")
            continue
        name = item.get("name")
        datatype = item.get("datatype")
        shape = item.get("shape", item.get("dims"))
        if not isinstance(name, str) or not name:
            problems.add(f"{where}.name", "must be a non-empty string")
        if datatype not in DATATYPES:
            problems.add(f"{where}.datatype", f"{datatype!r} is not one of {sorted(DATATYPES)}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and (d == -1 or d > 0) for d in shape
        ):
            problems.add(f"{where}.shape", f"must be a list of positive ints or -1, got {shape!r}")
            shape = []
        specs.append(TensorSpec(str(name), str(datatype), tuple(shape)))
    names = [spec.name for spec in specs]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.add(field_name, f"name {duplicate!r} appears more than once")
    return tuple(specs)


def _dynamic_batching(raw: Any, problems: _Problems) -> DynamicBatchingConfig | None:
    if raw is None:
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.add("dynamic_batching", f"must be a mapping, got {raw!r}")
        return None
    preferred = raw.get("preferred_batch_sizes", [])
    if not isinstance(preferred, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in preferred
    ):
        problems.add("dynamic_batching.preferred_batch_sizes", "must be a list of positive ints")
        preferred = []
    queue_size = _int(raw, "max_queue_size", DEFAULT_MAX_QUEUE_SIZE, "dynamic_batching.", problems)
    if queue_size == 0:
        problems.add("dynamic_batching.max_queue_size", "must be > 0 (the queue is always bounded)")
        queue_size = DEFAULT_MAX_QUEUE_SIZE
    return DynamicBatchingConfig(
        max_queue_delay_us=_int(raw, "max_queue_delay_us", 0, "dynamic_batching.", problems),
        preferred_batch_sizes=tuple(sorted(preferred)),
        max_queue_size=queue_size,
    )


def _instances(raw: Any, problems: _Problems) -> InstanceConfig:
    if raw is None:
        return InstanceConfig()
    if not isinstance(raw, Mapping):
        problems.add("instances", f"must be a mapping, got {raw!r}")
        return InstanceConfig()
    count = _int(raw, "count", 1, "instances.", problems)
    if count == 0:
        problems.add("instances.count", "must be at least 1")
        count = 1
    device = raw.get("device", "auto")
    if not isinstance(device, str) or not _valid_device(device):
        problems.add("instances.device", f"must be cpu, cuda, cuda:N or auto, got {device!r}")
        device = "auto"
    kind = raw.get("kind", "thread")
    if kind not in INSTANCE_KINDS:
        problems.add("instances.kind", f"must be one of {sorted(INSTANCE_KINDS)}, got {kind!r}")
        kind = "thread"
    nice = raw.get("nice", DEFAULT_PROCESS_NICE if kind == "process" else 0)
    if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
        problems.add("instances.nice", f"must be an integer 0..19, got {nice!r}")
        nice = 0
    elif nice and kind != "process":
        problems.add("instances.nice", "applies to kind: process only")
    return InstanceConfig(count=count, device=device, kind=kind, nice=nice)


def _parameters(raw: Any, problems: _Problems) -> dict[str, str]:
    if isinstance(raw, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        return dict(raw)
    problems.add("parameters", f"must be a mapping of strings to strings, got {raw!r}")
    return {}


def _valid_device(device: str) -> bool:
    if device in {"cpu", "cuda", "auto"}:
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _check_batching(config: ModelConfig, problems: _Problems) -> None:
    batching = config.dynamic_batching
    if batching is None:
        return
    if config.max_batch_size == 0:
        problems.add("dynamic_batching", "needs max_batch_size > 0")
    too_big = [s for s in batching.preferred_batch_sizes if s > config.max_batch_size]
    if too_big and config.max_batch_size > 0:
        problems.add(
            "dynamic_batching.preferred_batch_sizes",
            f"{too_big} exceed max_batch_size {config.max_batch_size}",
        )


def _storage_precision(
    raw: Mapping[str, Any], platform: str, precision: str, problems: _Problems
) -> str | None:
    value = raw.get("storage_precision")
    if value is None:
        return None
    if value not in STORAGE_PRECISIONS:
        problems.add("storage_precision", f"{value!r} is not one of {sorted(STORAGE_PRECISIONS)}")
        return None
    if precision != "fp32":
        problems.add(
            "storage_precision",
            f"needs precision fp32 (weights kept in {value}, computed in fp32), "
            f"got precision {precision!r}",
        )
    if platform == "torchscript":
        problems.add(
            "storage_precision",
            "not available for torchscript (a frozen module's weights are constants of its "
            "graph); use platform workload or torch_export",
        )
    return str(value)


def parse_model_config(raw: Any, source: str, default_name: str | None = None) -> ModelConfig:
    """Validate a parsed model.yaml mapping; raise ConfigError listing every problem."""
    problems = _Problems(source)
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [f"{source}: must be a mapping at the top level, got {type(raw).__name__}"]
        )
    known = set(ModelConfig.__dataclass_fields__) | {"dims"}
    for key in sorted(set(raw) - known):
        problems.add(str(key), f"unknown field (known: {', '.join(sorted(known - {'dims'}))})")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name:
        problems.add("name", "must be a non-empty string")
        name = str(name)
    platform = raw.get("platform", "workload" if "workload" in raw else None)
    workload = raw.get("workload")
    if platform not in PLATFORMS:
        problems.add("platform", f"{platform!r} is not one of {sorted(PLATFORMS)}")
        platform = "workload" if isinstance(workload, str) else "torchscript"
    elif platform == "workload" and not isinstance(workload, str):
        problems.add("workload", "platform 'workload' needs a workload name, e.g. resnet50")
    options = raw.get("workload_options", {})
    if not isinstance(options, Mapping):
        problems.add("workload_options", f"must be a mapping, got {options!r}")
        options = {}
    precision = raw.get("precision", "fp32")
    if precision not in PRECISIONS:
        problems.add("precision", f"{precision!r} is not one of {sorted(PRECISIONS)}")
        precision = "fp32"
    version_policy = raw.get("version_policy", "latest")
    if version_policy not in {"latest", "all"}:
        problems.add("version_policy", f"must be 'latest' or 'all', got {version_policy!r}")
        version_policy = "latest"
    artifact = raw.get("artifact", PLATFORMS[platform])
    if not isinstance(artifact, str) or not artifact or "/" in artifact or artifact.startswith("."):
        problems.add("artifact", f"must be a plain file name, got {artifact!r}")
        artifact = PLATFORMS[platform]
    warmup = raw.get("warmup", True)
    if not isinstance(warmup, bool):
        problems.add("warmup", f"must be true or false, got {warmup!r}")
        warmup = True
    config = ModelConfig(
        name=name,
        parameters=_parameters(raw.get("parameters", {}), problems),
        platform=platform,
        inputs=_tensor_specs(raw.get("inputs"), "inputs", problems, platform == "python"),
        outputs=_tensor_specs(raw.get("outputs"), "outputs", problems, platform == "python"),
        max_batch_size=_int(raw, "max_batch_size", 0, "", problems),
        artifact=artifact,
        workload=workload if isinstance(workload, str) else None,
        workload_options=dict(options),
        dynamic_batching=_dynamic_batching(raw.get("dynamic_batching"), problems),
        instances=_instances(raw.get("instances"), problems),
        precision=precision,
        storage_precision=_storage_precision(raw, platform, precision, problems),
        version_policy=version_policy,
        warmup=warmup,
        compile=parse_compile(
            raw.get("compile"),
            str(platform),
            _int(raw, "max_batch_size", 0, "", _Problems(source)),
            problems.add,
        ),
    )
    _check_batching(config, problems)
    if config.instances.kind == "process" and config.platform != "python":
        problems.add(
            "instances.kind",
            f"'process' runs python models only (platform {config.platform!r} runs in threads)",
        )
    config = _with_processing(config, raw, problems)
    if problems.items:
        raise ConfigError(problems.items)
    return config


def _with_processing(
    config: ModelConfig, raw: Mapping[str, Any], problems: _Problems
) -> ModelConfig:
    pre = parse_preprocess(raw.get("preprocess"), problems.add)
    post = parse_postprocess(raw.get("postprocess"), problems.add)
    if pre is None and post.empty:
        return config
    pre, post = check_processing(
        pre,
        post,
        inputs=config.inputs,
        outputs=config.outputs,
        max_batch_size=config.max_batch_size,
        add=problems.add,
    )
    return replace(config, preprocess=pre, postprocess=post)


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The model.yaml mapping for a config (what ``repo init`` writes)."""
    data: dict[str, Any] = {"name": config.name, "platform": config.platform}
    if config.workload:
        data["workload"] = config.workload
    if config.workload_options:
        data["workload_options"] = dict(config.workload_options)
    data["max_batch_size"] = config.max_batch_size
    data["inputs"] = [_spec_dict(s) for s in config.inputs]
    data["outputs"] = [_spec_dict(s) for s in config.outputs]
    if config.dynamic_batching is not None:
        batching = config.dynamic_batching
        data["dynamic_batching"] = {
            "max_queue_delay_us": batching.max_queue_delay_us,
            "preferred_batch_sizes": list(batching.preferred_batch_sizes),
            "max_queue_size": batching.max_queue_size,
        }
    data["instances"] = {"count": config.instances.count, "device": config.instances.device}
    if config.instances.kind != "thread":
        data["instances"]["kind"] = config.instances.kind
        data["instances"]["nice"] = config.instances.nice
    data["precision"] = config.precision
    if config.storage_precision is not None:
        data["storage_precision"] = config.storage_precision
    compiled = compile_to_dict(config.compile)
    if compiled is not None:
        data["compile"] = compiled
    if config.parameters:
        data["parameters"] = dict(config.parameters)
    pre = preprocess_to_dict(config.preprocess)
    if pre is not None:
        data["preprocess"] = pre
    post = postprocess_to_dict(config.postprocess)
    if post is not None:
        data["postprocess"] = post
    return data


def _spec_dict(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.dims)}
