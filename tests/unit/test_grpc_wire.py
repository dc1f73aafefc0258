"""inferpack's inference.proto is wire-compatible with Triton's, field by field."""

from __future__ import annotations

from typing import Any

import pytest

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

from inferpack.protocol.proto import inference_pb2  # noqa: E402


def _fields(descriptor: Any, prefix: str = "") -> dict[str, tuple[int, int, bool]]:
    name = f"{prefix}{descriptor.name}"
    found = {f"{name}.{f.name}": (f.number, f.type, f.is_repeated) for f in descriptor.fields}
    for nested in descriptor.nested_types:
        found.update(_fields(nested, f"{name}."))
    return found


def test_every_message_field_matches_triton() -> None:
    # grpc_service.proto imports model_config.proto (same package); ours holds both.
    theirs = {
        **model_config_pb2.DESCRIPTOR.message_types_by_name,
        **service_pb2.DESCRIPTOR.message_types_by_name,
    }
    for name, ours in inference_pb2.DESCRIPTOR.message_types_by_name.items():
        assert name in theirs, name
        mine, triton = _fields(ours), _fields(theirs[name])
        assert {k: triton.get(k) for k in mine} == mine, name


def test_every_rpc_matches_triton() -> None:
    ours = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert inference_pb2.DESCRIPTOR.package == "inference"
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert (method.input_type.name, method.output_type.name) == (
            other.input_type.name,
            other.output_type.name,
        )


def test_a_request_decodes_with_tritons_classes() -> None:
    request = inference_pb2.ModelInferRequest(model_name="m", id="7")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    tensor.parameters["binary_data_size"].int64_param = 8
    request.raw_input_contents.append(b"\x00" * 8)
    decoded = service_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert decoded.inputs[0].shape == [1, 2]
    assert decoded.inputs[0].parameters["binary_data_size"].int64_param == 8
    assert decoded.raw_input_contents == [b"\x00" * 8]


def _enums(descriptor: Any) -> dict[str, dict[str, int]]:
    found = {e.full_name: {v.name: v.number for v in e.values} for e in descriptor.enum_types}
    for nested in descriptor.nested_types:
        found.update(_enums(nested))
    return found


def test_every_enum_value_matches_triton() -> None:
    mine: dict[str, dict[str, int]] = {
        e.full_name: {v.name: v.number for v in e.values}
        for e in inference_pb2.DESCRIPTOR.enum_types_by_name.values()
    }
    for message in inference_pb2.DESCRIPTOR.message_types_by_name.values():
        mine.update(_enums(message))
    theirs = {
        e.full_name: {v.name: v.number for v in e.values}
        for e in model_config_pb2.DESCRIPTOR.enum_types_by_name.values()
    }
    for message in model_config_pb2.DESCRIPTOR.message_types_by_name.values():
        theirs.update(_enums(message))
    assert "inference.DataType" in mine
    for name, values in mine.items():
        assert {k: theirs[name].get(k) for k in values} == values, name
