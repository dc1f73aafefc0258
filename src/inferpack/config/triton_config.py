"""Triton's ``config.pbtxt``: serve a Triton model folder as it is, without a model.yaml.

The file is protobuf text format against the schema in ``proto/triton_model_config.proto``
(Triton's field names and numbers, only the part inferpack serves, plus every top-level
field Triton defines, typed ``Unsupported``). Reading takes three steps so that one
:class:`~inferpack.errors.ConfigError` lists every problem:

1. outline: walk the field *names* (not values) against the schema; a name it lacks is an
   unknown field, a name typed ``Unsupported`` is refused, each named with its path; both
   are blanked out of the text (lines kept, so later line numbers still hold);
2. parse: ``text_format.Parse`` reads what is left strictly (values, enums, nesting);
3. map: the message becomes the equivalent model.yaml mapping, validated once by
   :func:`~inferpack.config.model_config.parse_model_config`.

The outline step exists because text format cannot skip a field it does not know the
shape of without also skipping misspelt ones (``allow_unknown_field`` hides both).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor

from inferpack.config.model_config import ModelConfig, parse_model_config
from inferpack.config.proto import triton_model_config_pb2 as pb
from inferpack.config.triton_json import v2_datatype
from inferpack.errors import ConfigError

TRITON_CONFIG_FILE: Final = "config.pbtxt"
# Triton platform -> inferpack platform; Triton's backend names for the same.
PLATFORMS: Final[dict[str, str]] = {
    "pytorch_libtorch": "torchscript",
    "onnxruntime_onnx": "onnx",
    "python": "python",  # Triton has no such platform: a python model names its backend only
}
BACKENDS: Final[dict[str, str]] = {
    "pytorch": "pytorch_libtorch",
    "onnxruntime": "onnxruntime_onnx",
    "python": "python",
}
# Parameters of Triton's python backend that inferpack cannot honour, and why.
_REFUSED_PARAMETERS: Final[dict[str, str]] = {
    "EXECUTION_ENV_PATH": "a packed conda environment per model is not supported; install "
    "the model's packages into the server's environment",
}
_UNSUPPORTED: Final = pb.Unsupported.DESCRIPTOR.full_name
_OPENERS: Final = frozenset({"{", "<", "["})
_CLOSERS: Final = frozenset({"}", ">", "]"})
# model.yaml field names in parse_model_config's problems -> the config.pbtxt names.
_Problem = Callable[[str, str], None]  # (field path, what is wrong)
_FIELD_NAMES: Final[dict[str, str]] = {
    "inputs": "input",
    "outputs": "output",
    "datatype": "data_type",
    "shape": "dims",
    "instances": "instance_group",
    "max_queue_delay_us": "max_queue_delay_microseconds",
    "preferred_batch_sizes": "preferred_batch_size",
    "artifact": "default_model_filename",
}


@dataclass
class _Outline:
    """What the outline step found: problems, and the text spans to blank out."""

    problems: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    line_starts: list[int] = field(default_factory=list)

    def offset(self, tokenizer: text_format.Tokenizer) -> int:
        """Offset in the text of the tokenizer's current token (end of text at the end)."""
        if tokenizer.AtEnd():
            return self.line_starts[-1]
        line, column = _position(tokenizer)
        return self.line_starts[line - 1] + column - 1


def _position(tokenizer: text_format.Tokenizer) -> tuple[int, int]:
    """1-based line and column of the tokenizer's current token."""
    here = tokenizer.ParseError("")  # type: ignore[arg-type]  # the stubs want a Message
    return here.GetLine() or 1, here.GetColumn() or 1


def parse_triton_config(text: str, source: str, folder: str) -> ModelConfig:
    """Validate a config.pbtxt for the model folder ``folder``; ConfigError lists every problem."""
    outline = _Outline(line_starts=_line_starts(text))
    message = pb.ModelConfig()
    try:
        _fields(text_format.Tokenizer(text.split("\n")), pb.ModelConfig.DESCRIPTOR, "", outline)
    except text_format.ParseError as error:
        raise ConfigError([f"{source}: line {error}"]) from None
    problems = [f"{source}: {problem}" for problem in dict.fromkeys(outline.problems)]
    try:
        text_format.Parse(_blank(text, outline.spans), message)
    except text_format.ParseError as error:
        raise ConfigError([*problems, f"{source}: line {error}"]) from None
    raw = _model_yaml(message, folder, problems, source)
    try:
        config = parse_model_config(raw, source, default_name=folder)
    except ConfigError as error:
        problems += [_triton_names(problem, source) for problem in error.problems]
    if problems:
        raise ConfigError(problems)
    return config


def _line_starts(text: str) -> list[int]:
    """Offset of each line's start, then the text's length."""
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    starts[-1] = len(text)
    return starts


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = [c if c == "\n" else " " for c in chars[start:end]]
    return "".join(chars)


def _fields(
    tokenizer: text_format.Tokenizer, descriptor: Any, path: str, outline: _Outline
) -> None:
    """Outline the fields of one message, up to its closing bracket (or the end of text)."""
    seen: dict[str, int] = {}
    while not tokenizer.AtEnd() and tokenizer.token not in _CLOSERS:
        start = outline.offset(tokenizer)
        line = _position(tokenizer)[0]
        name = tokenizer.ConsumeIdentifierOrNumber()
        known = descriptor.fields_by_name.get(name)
        if known is None or _is_unsupported(known):
            _skip_value(tokenizer)
            outline.spans.append((start, outline.offset(tokenizer)))
            what = "unknown field" if known is None else "not supported by inferpack"
            outline.problems.append(f"{path}{name}: {what} (line {line})")
        elif known.message_type is not None:
            seen[name] = _message_value(
                tokenizer, known, f"{path}{name}", seen.get(name, 0), outline
            )
        else:
            _skip_value(tokenizer)
        if not tokenizer.TryConsume(","):
            tokenizer.TryConsume(";")


def _is_unsupported(known: FieldDescriptor) -> bool:
    return known.message_type is not None and known.message_type.full_name == _UNSUPPORTED


def _message_value(
    tokenizer: text_format.Tokenizer,
    known: FieldDescriptor,
    path: str,
    index: int,
    outline: _Outline,
) -> int:
    """Outline ``{...}`` or ``[{...}, ...]``; returns the next index of a repeated field."""
    tokenizer.TryConsume(":")
    in_list = tokenizer.TryConsume("[")
    while not (in_list and tokenizer.TryConsume("]")):
        closing = "}" if tokenizer.TryConsume("{") else ">"
        if closing == ">":
            tokenizer.Consume("<")
        where = f"{path}[{index}]." if known.is_repeated else f"{path}."
        _fields(tokenizer, known.message_type, where, outline)
        tokenizer.Consume(closing)
        index += 1
        if not in_list:
            break
        tokenizer.TryConsume(",")
    return index


def _skip_value(tokenizer: text_format.Tokenizer) -> None:
    """Step over one field's value: a scalar, strings, or a bracketed block of any depth."""
    tokenizer.TryConsume(":")
    if tokenizer.token in _OPENERS:
        depth = 0
        while True:
            if tokenizer.AtEnd():
                raise text_format.ParseError("unbalanced brackets", *_position(tokenizer))
            depth += (tokenizer.token in _OPENERS) - (tokenizer.token in _CLOSERS)
            tokenizer.NextToken()
            if depth == 0:
                return
    if tokenizer.token[:1] in {'"', "'"}:
        while tokenizer.token[:1] in {'"', "'"}:  # adjacent strings concatenate
            tokenizer.NextToken()
        return
    tokenizer.ConsumeIdentifierOrNumber()


def _model_yaml(
    message: pb.ModelConfig, folder: str, problems: list[str], source: str
) -> dict[str, Any]:
    """The model.yaml mapping equivalent to a parsed config; Triton-only problems appended."""

    def problem(where: str, what: str) -> None:
        problems.append(f"{source}: {where}: {what}")

    if message.name and message.name != folder:
        problem(
            "name",
            f"{message.name!r} differs from its folder {folder!r} (Triton requires both equal)",
        )
    raw: dict[str, Any] = {
        "name": folder,
        "platform": _platform(message, problem),
        "max_batch_size": message.max_batch_size,
        "inputs": [_tensor(t, f"input[{i}]", problem) for i, t in enumerate(message.input)],
        "outputs": [_tensor(t, f"output[{i}]", problem) for i, t in enumerate(message.output)],
        "instances": _instances(list(message.instance_group), problem),
        "version_policy": _version_policy(message.version_policy, problem),
    }
    if message.default_model_filename:
        raw["artifact"] = message.default_model_filename
    if message.model_transaction_policy.decoupled:
        problem(
            "model_transaction_policy.decoupled",
            "decoupled (streaming) models are not supported: inferpack answers every request "
            "with exactly one response",
        )
    if message.parameters:
        raw["parameters"] = {k: v.string_value for k, v in sorted(message.parameters.items())}
        for key in sorted(set(message.parameters) & set(_REFUSED_PARAMETERS)):
            problem(f"parameters.{key}", _REFUSED_PARAMETERS[key])
    labelled = [(o.name, o.label_filename) for o in message.output if o.label_filename]
    if len(labelled) > 1:
        problem("output", f"label_filename on one output is supported, got {len(labelled)}")
    elif labelled:
        # Triton uses the labels for the classification extension only, and reports the
        # output's own values: no softmax (/predictions answers them as they are, too).
        output, labels = labelled[0]
        raw["postprocess"] = {
            "classification": {"output": output, "labels": labels, "softmax": False}
        }
    if message.HasField("dynamic_batching"):
        batching = message.dynamic_batching
        raw["dynamic_batching"] = {
            "max_queue_delay_us": batching.max_queue_delay_microseconds,
            "preferred_batch_sizes": list(batching.preferred_batch_size),
        }
    return raw


def _platform(message: pb.ModelConfig, problem: _Problem) -> str:
    platform = str(message.platform)
    if message.backend:
        via_backend = BACKENDS.get(message.backend)
        if via_backend is None:
            problem("backend", f"{message.backend!r} is not one of {sorted(BACKENDS)}")
        elif platform and platform != via_backend:
            problem("backend", f"{message.backend!r} does not run platform {platform!r}")
        platform = platform or via_backend or ""
    if not platform:
        if not message.backend:
            problem("platform", f"missing: one of {sorted(PLATFORMS)} (or backend)")
        return "torchscript"  # stands in, so the fields below are still checked
    if platform not in PLATFORMS:
        problem("platform", f"{platform!r} is not one of {sorted(PLATFORMS)}")
        return "torchscript"
    return PLATFORMS[platform]


def _tensor(
    tensor: pb.ModelInput | pb.ModelOutput, where: str, problem: _Problem
) -> dict[str, Any]:
    datatype = "FP32"
    if tensor.data_type == pb.TYPE_INVALID:
        problem(f"{where}.data_type", "missing (e.g. TYPE_FP32)")
    else:
        datatype = v2_datatype(pb.DataType.Name(tensor.data_type))
    return {"name": tensor.name, "datatype": datatype, "shape": list(tensor.dims)}


def _instances(groups: list[pb.InstanceGroup], problem: _Problem) -> dict[str, Any]:
    """Triton's default (no group) is one instance on each GPU, or the CPU: device auto."""
    if not groups:
        return {"count": 1, "device": "auto"}
    if len(groups) > 1:
        problem("instance_group", f"one group is supported, got {len(groups)}")
    group = groups[0]
    gpus = list(group.gpus)
    kind = pb.InstanceGroup.Kind.Name(group.kind)
    device = {"KIND_CPU": "cpu", "KIND_GPU": "cuda", "KIND_AUTO": "auto"}.get(kind)
    if device is None:
        problem(
            "instance_group[0].kind", f"{kind} is not supported (KIND_CPU, KIND_GPU, KIND_AUTO)"
        )
        device = "auto"
    if gpus and device == "cpu":
        problem("instance_group[0].gpus", "needs kind KIND_GPU")
    elif len(gpus) > 1:
        problem("instance_group[0].gpus", f"one GPU per model is supported, got {gpus}")
    elif gpus:
        device = f"cuda:{gpus[0]}"
    return {"count": group.count or 1, "device": device}  # Triton: count 0 means 1


def _version_policy(policy: pb.VersionPolicy, problem: _Problem) -> str:
    if policy.WhichOneof("policy_choice") == "all":
        return "all"
    if policy.latest.num_versions > 1:
        problem(
            "version_policy.latest.num_versions",
            f"only 1 is supported, got {policy.latest.num_versions} (or use all {{}})",
        )
    return "latest"


def _triton_names(problem: str, source: str) -> str:
    """Rename the model.yaml field in one of parse_model_config's problems to Triton's."""
    where, sep, what = problem.removeprefix(f"{source}: ").partition(": ")
    if not sep:
        return problem
    renamed = re.sub(r"[a-z_]+", lambda m: _FIELD_NAMES.get(m.group(), m.group()), where)
    return f"{source}: {renamed}: {what}"
