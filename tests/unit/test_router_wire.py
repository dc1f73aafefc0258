"""The router's field-1 reader agrees with protobuf on every per-model request type."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.errors import InvalidInputError
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.router.wire import string_field, wrap_message

names = st.text(max_size=40)


@settings(max_examples=100, deadline=None)
@given(name=names, version=names, ident=names, raw=st.lists(st.binary(max_size=300), max_size=3))
def test_model_name_of_an_infer_request(
    name: str, version: str, ident: str, raw: list[bytes]
) -> None:
    request = pb.ModelInferRequest(model_name=name, model_version=version, id=ident)
    request.parameters["priority"].int64_param = 3
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 16])
    tensor.contents.fp32_contents.extend([0.5] * 4)
    request.raw_input_contents.extend(raw)
    assert string_field(request.SerializeToString()) == name


@settings(max_examples=50, deadline=None)
@given(name=names, version=names)
def test_name_of_the_other_model_requests(name: str, version: str) -> None:
    for kind in (
        pb.ModelReadyRequest,
        pb.ModelMetadataRequest,
        pb.ModelConfigRequest,
        pb.ModelStatisticsRequest,
    ):
        assert string_field(kind(name=name, version=version).SerializeToString()) == name


def test_the_last_occurrence_wins_as_in_protobuf() -> None:
    data = pb.ModelReadyRequest(name="a").SerializeToString()
    data += pb.ModelReadyRequest(name="b").SerializeToString()
    assert string_field(data) == pb.ModelReadyRequest.FromString(data).name == "b"


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x0a", b"\xff" * 11, b"\x0b"])
def test_malformed_messages_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInputError, match="malformed protobuf"):
        string_field(data)


@settings(max_examples=50, deadline=None)
@given(ident=names, payload=st.binary(max_size=400))
def test_a_wrapped_infer_response_is_a_stream_answer(ident: str, payload: bytes) -> None:
    response = pb.ModelInferResponse(model_name="m", id=ident, raw_output_contents=[payload])
    answer = pb.ModelStreamInferResponse.FromString(wrap_message(response.SerializeToString(), 2))
    assert answer.infer_response == response
    assert answer.error_message == ""
