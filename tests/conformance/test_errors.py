"""Errors: TF Serving's status codes and messages (predict_util.cc,
tensorflow/cc/saved_model/util.cc, server_core.cc, basic_manager.cc,
get_model_status_impl.cc, get_model_metadata_impl.cc), and the server stays up."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from modelserver.model_config import parse_model_server_config
from modelserver.server import ModelServerOptions
from rpc.errors import SHOWN_CHARS
from tests.support.modelserver_thread import RPC_TIMEOUT, ServerThread

pytestmark = pytest.mark.timeout(120)

CODE = grpc.StatusCode


@pytest.fixture(scope="module")
def server(testdata):
    config = parse_model_server_config(f"""
        model_config_list {{
          config {{ name: "default" base_path: "{testdata / "saved_model_half_plus_two_cpu"}"
                   model_platform: "tensorflow" }}
          config {{ name: "two" base_path: "{testdata / "saved_model_half_plus_two_2_versions"}"
                   model_platform: "tensorflow" model_version_policy {{ all {{}} }}
                   version_labels {{ key: "stable" value: 123 }} }}
        }}""")
    with ServerThread(ModelServerOptions(model_config=config, port=0)) as running:
        yield running


def predict_request(name="default", x=None, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32) if x is None else x))
    return request


def no_inputs():
    request = predict_request()
    del request.inputs["x"]
    return request


def renamed_input():
    request = predict_request()
    request.inputs["z"].CopyFrom(request.inputs.pop("x"))
    return request


def extra_input():
    request = predict_request()
    request.inputs["z"].CopyFrom(request.inputs["x"])
    return request


def with_filter(*aliases):
    request = predict_request()
    request.output_filter.extend(aliases)
    return request


def bad_tensor_content():
    request = predict_request()
    request.inputs["x"].tensor_content = b"\x00" * 3
    return request


def without_spec():
    request = predict_request()
    request.ClearField("model_spec")
    return request


PREDICT_ERRORS = {
    "unknown model": (
        predict_request("nope"),
        CODE.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "missing version": (
        predict_request(version=7),
        CODE.NOT_FOUND,
        "Servable not found for request: Specific(default, 7)",
    ),
    "unknown label": (
        predict_request("two", version_label="nope"),
        CODE.INVALID_ARGUMENT,
        "Unrecognized servable version label: nope",
    ),
    "label of another model": (
        predict_request(version_label="stable"),
        CODE.INVALID_ARGUMENT,
        "Unrecognized servable version label: stable",
    ),
    "unknown signature": (
        predict_request(signature_name="nope"),
        CODE.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    "no inputs": (
        no_inputs(),
        CODE.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. Missing but required: {x}.",
    ),
    "extra input": (
        extra_input(),
        CODE.INVALID_ARGUMENT,
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. "
        "Missing but required: {}.",
    ),
    "missing input": (
        renamed_input(),
        CODE.INVALID_ARGUMENT,
        "Signature input alias: x(feed name: x:0) not found in request and no default value provided. "
        "Inputs expected to be in the request {z}, or default input alias set: ",
    ),
    "wrong dtype": (
        predict_request(x=np.array([[2]], np.int32)),
        CODE.INVALID_ARGUMENT,
        "Expects arg[0] to be float but int32 is provided",
    ),
    "unknown output": (
        with_filter("nope"),
        CODE.INVALID_ARGUMENT,
        "output tensor alias not found in signature: nope Outputs expected to be in the set {y}.",
    ),
    "duplicate output": (with_filter("y", "y"), CODE.INVALID_ARGUMENT, "duplicate output tensor alias: y"),
    "missing model spec": (without_spec(), CODE.INVALID_ARGUMENT, "Missing ModelSpec"),
    "empty model name": (predict_request(""), CODE.INVALID_ARGUMENT, "ModelSpec has no name specified."),
}


@pytest.mark.parametrize("case", list(PREDICT_ERRORS))
def test_predict_errors(server, case):
    request, code, message = PREDICT_ERRORS[case]
    stub = server.prediction_stub()
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, RPC_TIMEOUT)
    assert info.value.code() == code
    assert info.value.details() == message
    # ... and the server keeps serving.
    assert list(stub.Predict(predict_request(), RPC_TIMEOUT).outputs["y"].float_val) == [3.0]


def test_unparseable_tensor(server):
    with pytest.raises(grpc.RpcError) as info:
        server.prediction_stub().Predict(bad_tensor_content(), RPC_TIMEOUT)
    assert info.value.code() == CODE.INVALID_ARGUMENT
    # TF Serving's words, then what exactly is wrong.
    assert info.value.details().startswith("tensor parsing error: x")
    assert "tensor_content has 3 bytes but shape [1, 1] of DT_FLOAT needs 4" in info.value.details()


def test_status_errors(server):
    stub = server.model_stub()
    cases = [
        ({"name": "nope"}, CODE.NOT_FOUND, "Could not find any versions of model nope"),
        (
            {"name": "default", "version": {"value": 7}},
            CODE.NOT_FOUND,
            "Could not find version 7 of model default",
        ),
    ]
    for spec, code, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec), RPC_TIMEOUT)
        assert (info.value.code(), info.value.details()) == (code, message)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), RPC_TIMEOUT)
    assert (info.value.code(), info.value.details()) == (CODE.INVALID_ARGUMENT, "Missing ModelSpec")


def test_metadata_errors(server):
    stub = server.prediction_stub()
    Request = get_model_metadata_pb2.GetModelMetadataRequest
    cases = [
        (
            Request(model_spec={"name": "default"}),
            CODE.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field",
        ),
        (
            Request(model_spec={"name": "nope"}, metadata_field=["signature_def"]),
            CODE.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (Request(metadata_field=["signature_def"]), CODE.INVALID_ARGUMENT, "Missing ModelSpec"),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.GetModelMetadata(request, RPC_TIMEOUT)
        assert (info.value.code(), info.value.details()) == (code, message)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(Request(model_spec={"name": "default"}, metadata_field=["graph"]), RPC_TIMEOUT)
    assert info.value.code() == CODE.INVALID_ARGUMENT
    assert info.value.details().startswith("Metadata field graph is not supported")


def test_classify_is_unimplemented(server):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    with pytest.raises(grpc.RpcError) as info:
        server.prediction_stub().Classify(request, RPC_TIMEOUT)
    assert info.value.code() == CODE.UNIMPLEMENTED
    assert "use Predict" in info.value.details()


def test_wrong_dtype_in_typed_field(server):
    """int_val against a float input: TensorFlow's own check, as in TF Serving."""
    request = predict_request()
    request.inputs["x"].Clear()
    request.inputs["x"].dtype = types_pb2.DT_INT64
    request.inputs["x"].int64_val.append(2)
    with pytest.raises(grpc.RpcError) as info:
        server.prediction_stub().Predict(request, RPC_TIMEOUT)
    assert info.value.code() == CODE.INVALID_ARGUMENT
    assert info.value.details() == "Expects arg[0] to be float but int64 is provided"


def test_huge_names_are_not_echoed_whole(server):
    """TF Serving echoes the name; a 10 KB one is cut (normal names are not)."""
    with pytest.raises(grpc.RpcError) as info:
        server.prediction_stub().Predict(predict_request("m" * 10_240), RPC_TIMEOUT)
    assert info.value.code() == CODE.NOT_FOUND
    cut = "m" * SHOWN_CHARS + "...(10240 characters)"
    assert info.value.details().startswith(f"Servable not found for request: Latest({cut}")
    assert len(info.value.details()) < 400
