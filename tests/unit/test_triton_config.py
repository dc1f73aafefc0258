"""config.pbtxt → ModelConfig: Triton's text format, mapped onto model.yaml's validation."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from inferpack.config.proto import triton_model_config_pb2 as pb
from inferpack.config.triton_config import parse_triton_config
from inferpack.errors import ConfigError
from inferpack.repository import LocalRepository

PROTO = Path(pb.__file__).with_suffix("").with_name("triton_model_config.proto")

RESNET = """
name: "resnet50"
platform: "pytorch_libtorch"
max_batch_size: 32
input [
  {
    name: "input__0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "output__0"
    data_type: TYPE_FP32
    dims: [ 1000 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 500
}
instance_group [
  {
    count: 2
    kind: KIND_GPU
    gpus: [ 0 ]
  }
]
version_policy: { latest: { num_versions: 1 } }
"""

ONNX = """
name: "bert"
platform: "onnxruntime_onnx"
max_batch_size: 8
default_model_filename: "bert.onnx"
input { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }
input { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] }
output { name: "logits" data_type: TYPE_FP32 dims: [ 2 ] }
instance_group { kind: KIND_CPU }
version_policy { all {} }
"""


def _errors(text: str, folder: str = "resnet50") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_triton_config(text, "resnet50/config.pbtxt", folder)
    return caught.value.problems


def test_pytorch_libtorch_resnet_maps_every_field() -> None:
    config = parse_triton_config(RESNET, "resnet50/config.pbtxt", "resnet50")
    assert (config.name, config.platform, config.artifact) == (
        "resnet50",
        "torchscript",
        "model.pt",
    )
    assert config.max_batch_size == 32
    assert [(s.name, s.datatype, s.dims) for s in config.inputs] == [
        ("input__0", "FP32", (3, 224, 224))
    ]
    assert [(s.name, s.datatype, s.dims) for s in config.outputs] == [
        ("output__0", "FP32", (1000,))
    ]
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.preferred_batch_sizes == (8, 16)
    assert config.dynamic_batching.max_queue_delay_us == 500
    assert (config.instances.count, config.instances.device) == (2, "cuda:0")
    assert config.version_policy == "latest"


def test_onnxruntime_onnx_with_its_own_file_name_on_cpu() -> None:
    config = parse_triton_config(ONNX, "bert/config.pbtxt", "bert")
    assert (config.platform, config.artifact) == ("onnx", "bert.onnx")
    assert [(s.name, s.datatype, s.dims) for s in config.inputs] == [
        ("input_ids", "INT64", (-1,)),
        ("attention_mask", "INT64", (-1,)),
    ]
    assert config.dynamic_batching is None
    assert (config.instances.count, config.instances.device) == (1, "cpu")
    assert config.version_policy == "all"


@pytest.mark.parametrize(
    ("backend", "platform"), [("pytorch", "torchscript"), ("onnxruntime", "onnx")]
)
def test_backend_names_the_platform(backend: str, platform: str) -> None:
    text = ONNX.replace('platform: "onnxruntime_onnx"', f'backend: "{backend}"')
    assert parse_triton_config(text, "bert/config.pbtxt", "bert").platform == platform


@pytest.mark.parametrize(
    ("triton", "v2"),
    [
        ("TYPE_STRING", "BYTES"),
        ("TYPE_BOOL", "BOOL"),
        ("TYPE_UINT8", "UINT8"),
        ("TYPE_INT8", "INT8"),
        ("TYPE_INT32", "INT32"),
        ("TYPE_FP16", "FP16"),
        ("TYPE_FP64", "FP64"),
    ],
)
def test_datatypes_map_to_v2_names(triton: str, v2: str) -> None:
    text = ONNX.replace("data_type: TYPE_INT64", f"data_type: {triton}", 1)
    config = parse_triton_config(text, "bert/config.pbtxt", "bert")
    assert [spec.datatype for spec in config.inputs] == [v2, "INT64"]


def test_three_unsupported_fields_are_named_in_one_error() -> None:
    text = RESNET.replace("dynamic_batching {", "optimization {\n  cuda { graphs: true }\n}\nx {")
    text = text.replace("x {", "sequence_batching {", 1) + (
        'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "$$TRITON/env.tar.gz" } }\n'
        'model_warmup [ { name: "zeros" batch_size: 1 inputs { key: "input__0"\n'
        "  value { data_type: TYPE_FP32 dims: [ 3, 224, 224 ] zero_data: true } } } ]\n"
    )
    problems = _errors(text)
    assert [p.split(": ")[1] for p in problems] == [
        "optimization",
        "sequence_batching",
        "model_warmup",
        "parameters.EXECUTION_ENV_PATH",  # parameters are read; this one cannot be honoured
    ]
    assert all("not supported by inferpack" in p for p in problems[:3])
    assert "conda environment" in problems[3]
    assert (
        problems[0] == "resnet50/config.pbtxt: optimization: not supported by inferpack (line 20)"
    )


def test_unsupported_nested_fields_are_named_with_their_path() -> None:
    text = RESNET.replace("format: FORMAT_NCHW", "reshape: { shape: [ 1, 3, 224, 224 ] }")
    text = text.replace("max_queue_delay_microseconds: 500", "priority_levels: 2")
    text = text.replace("latest: { num_versions: 1 }", "specific { versions: [ 1, 3 ] }")
    assert [p.split(": ")[1] for p in _errors(text)] == [
        "input[0].reshape",
        "dynamic_batching.priority_levels",
        "version_policy.specific",
    ]


def test_unknown_fields_are_named_with_their_line_and_values_still_checked() -> None:
    text = RESNET.replace("format: FORMAT_NCHW", "fromat: FORMAT_NCHW")
    text = text.replace("max_batch_size: 32", "max_batch_size: 32\nbatch_size: 4")
    problems = _errors(text.replace("dims: [ 1000 ]", "dims: [ many ]"))
    assert problems[:2] == [
        "resnet50/config.pbtxt: batch_size: unknown field (line 5)",
        "resnet50/config.pbtxt: input[0].fromat: unknown field (line 10)",
    ]
    assert "line 18:" in problems[2] and "many" in problems[2]  # the value error, too


def test_name_must_match_the_folder() -> None:
    assert _errors(RESNET, folder="resnet") == [
        "resnet50/config.pbtxt: name: 'resnet50' differs from its folder 'resnet' "
        "(Triton requires both equal)"
    ]


def test_name_defaults_to_the_folder() -> None:
    text = RESNET.replace('name: "resnet50"', "")
    assert parse_triton_config(text, "r/config.pbtxt", "r").name == "r"


def test_triton_only_limits_and_model_yaml_checks_are_reported_together() -> None:
    text = RESNET.replace('platform: "pytorch_libtorch"', 'platform: "tensorrt_plan"')
    text = text.replace("gpus: [ 0 ]", "gpus: [ 0, 1 ]")
    text = text.replace("num_versions: 1", "num_versions: 2")
    text = text.replace("preferred_batch_size: [ 8, 16 ]", "preferred_batch_size: [ 8, 64 ]")
    text = text.replace("data_type: TYPE_FP32\n    format", "data_type: TYPE_BF16\n    format")
    fields = [p.split(": ")[1] for p in _errors(text)]
    assert fields == [
        "platform",
        "instance_group[0].gpus",
        "version_policy.latest.num_versions",
        "input[0].data_type",  # BF16 is no v2 datatype inferpack serves
        "dynamic_batching.preferred_batch_size",
    ]


def test_instance_groups_beyond_one_device_are_refused() -> None:
    two = RESNET.replace("gpus: [ 0 ]\n  }", "gpus: [ 0 ]\n  },\n  { kind: KIND_CPU }")
    assert _errors(two) == ["resnet50/config.pbtxt: instance_group: one group is supported, got 2"]
    model_kind = RESNET.replace("kind: KIND_GPU\n    gpus: [ 0 ]", "kind: KIND_MODEL")
    assert "KIND_MODEL is not supported" in _errors(model_kind)[0]


def test_platform_and_backend_must_agree() -> None:
    text = RESNET.replace(
        'platform: "pytorch_libtorch"', 'platform: "pytorch_libtorch"\nbackend: "onnxruntime"'
    )
    assert [p.split(": ")[1] for p in _errors(text)] == ["backend"]


def test_schema_names_and_numbers_match_tritons() -> None:
    """Every field and enum value of the schema exists in Triton's ModelConfig, same number."""
    triton = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    renames = {"DynamicBatching": "ModelDynamicBatching", "InstanceGroup": "ModelInstanceGroup"}
    renames["VersionPolicy"] = "ModelVersionPolicy"
    for name, ours in pb.DESCRIPTOR.message_types_by_name.items():
        if name == "Unsupported":
            continue
        theirs = triton.DESCRIPTOR.message_types_by_name[renames.get(name, name)]
        assert {f.name: f.number for f in ours.fields} == {
            f.name: f.number for f in theirs.fields if f.name in ours.fields_by_name
        }, name
    assert {v.name: v.number for v in pb.DataType.DESCRIPTOR.values} == {
        v.name: v.number for v in triton.DataType.DESCRIPTOR.values
    }
    top = {f.name for f in triton.ModelConfig.DESCRIPTOR.fields}
    assert top == set(pb.ModelConfig.DESCRIPTOR.fields_by_name)  # every top-level field named


def test_generated_module_matches_the_proto(tmp_path: Path) -> None:
    """The committed _pb2 was regenerated after the last edit of the .proto."""
    pytest.importorskip("grpc_tools")
    root = PROTO.parents[3]  # src/
    out = tmp_path / "schema.pb"
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I", str(root)]
    command += [f"--descriptor_set_out={out}", str(PROTO.relative_to(root))]
    subprocess.run(command, check=True, cwd=root)
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in compiled.message_type:  # protoc adds json_name; the _pb2 leaves it out
        for nested in (message, *message.nested_type):
            for field in nested.field:
                field.ClearField("json_name")
    assert compiled == descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)


def test_a_repository_serves_config_pbtxt_and_prefers_model_yaml(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "resnet50" / "1").mkdir(parents=True)
    (tmp_path / "resnet50" / "config.pbtxt").write_text(RESNET)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.pbtxt").write_text(ONNX)
    (tmp_path / "bert" / "model.yaml").write_text(
        "platform: onnx\ninputs: [{name: x, datatype: FP32, shape: [4]}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [4]}]\n"
    )
    (tmp_path / "notes").mkdir()
    repository = LocalRepository(tmp_path)
    assert repository.model_names() == ["bert", "resnet50"]
    assert repository.config("resnet50").instances.device == "cuda:0"
    with caplog.at_level(logging.WARNING):
        assert repository.config("bert").inputs[0].name == "x"
    assert "has both model.yaml and config.pbtxt; serving model.yaml" in caplog.text


def test_label_filename_becomes_the_classification_labels() -> None:
    text = RESNET.replace("dims: [ 1000 ]", 'dims: [ 1000 ]\n    label_filename: "labels.txt"')
    config = parse_triton_config(text, "resnet50/config.pbtxt", "resnet50")
    classification = config.postprocess.classification
    assert classification is not None
    assert (classification.output, classification.labels) == ("output__0", "labels.txt")
    assert classification.softmax is False  # Triton reports the output's own values
    assert config.folder_files() == ["labels.txt"]


def test_label_filename_on_two_outputs_is_refused() -> None:
    text = ONNX.replace(
        'output { name: "logits" data_type: TYPE_FP32 dims: [ 2 ] }',
        'output { name: "a" data_type: TYPE_FP32 dims: [ 2 ] label_filename: "a.txt" }\n'
        'output { name: "b" data_type: TYPE_FP32 dims: [ 2 ] label_filename: "b.txt" }',
    )
    problems = _errors(text, "bert")
    assert any("label_filename on one output is supported, got 2" in p for p in problems)


def test_parameters_are_read_and_a_decoupled_model_is_refused_by_name() -> None:
    text = RESNET + 'parameters { key: "mode" value { string_value: "fast" } }\n'
    assert parse_triton_config(text, "resnet50/config.pbtxt", "resnet50").parameters == {
        "mode": "fast"
    }
    problems = _errors(RESNET + "model_transaction_policy { decoupled: true }\n")
    assert problems == [
        "resnet50/config.pbtxt: model_transaction_policy.decoupled: decoupled (streaming) "
        "models are not supported: inferpack answers every request with exactly one response"
    ]


def test_a_python_backend_model_reads_as_platform_python() -> None:
    text = (
        'backend: "python"\nmax_batch_size: 4\n'
        'input [{ name: "IN" data_type: TYPE_STRING dims: [ 1 ] }]\n'
        'output [{ name: "OUT" data_type: TYPE_STRING dims: [ 1 ] }]\n'
        "instance_group [{ kind: KIND_CPU count: 2 }]\n"
    )
    config = parse_triton_config(text, "ident/config.pbtxt", "ident")
    assert (config.platform, config.artifact) == ("python", "model.py")
    assert (config.instances.count, config.instances.kind) == (2, "thread")
    assert config.inputs[0].datatype == "BYTES"
