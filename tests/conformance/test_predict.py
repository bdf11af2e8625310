"""Predict against TF Serving's own test models, with TF Serving's official client
stubs, checked against what TF Serving's tests and README say it answers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

from modelserver.server import ModelServerOptions
from tests.support.modelserver_thread import RPC_TIMEOUT, ServerThread

pytestmark = pytest.mark.timeout(180)

# directory -> (expected y for x = 2.0, version that answers with the default policy)
MODELS = {
    "saved_model_half_plus_two_cpu": (3.0, 123),
    "saved_model_half_plus_two_tf2_cpu": (3.0, 123),
    "saved_model_half_plus_three": (4.0, 123),
    "saved_model_half_plus_two_2_versions": (3.0, 124),
}


@pytest.fixture(scope="module")
def servers(testdata):
    """One server per test model, each serving it as "default" (TF Serving's tests' name)."""
    started = {}
    try:
        for directory in MODELS:
            started[directory] = ServerThread(
                ModelServerOptions.for_model("default", testdata / directory, port=0)
            ).__enter__()
        yield started
    finally:
        for server in started.values():
            server.__exit__(None, None, None)


def x_request(model_name="default", signature_name="", specify_output=True) -> predict_pb2.PredictRequest:
    """TF Serving's VerifyPredictRequest: x = [2.0] with shape [1] in float_val."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    if signature_name:
        request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    return request


@pytest.mark.parametrize("directory", list(MODELS))
@pytest.mark.parametrize("specify_output", [True, False])
def test_predict_as_tf_serving_tests_do(servers, directory, specify_output):
    expected, version = MODELS[directory]
    stub = servers[directory].prediction_stub()
    result = stub.Predict(x_request(specify_output=specify_output), RPC_TIMEOUT)
    assert list(result.outputs) == ["y"]
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    # TF Serving answers with the typed field (Tensor::AsProtoField).
    assert list(result.outputs["y"].float_val) == [expected]
    assert result.outputs["y"].tensor_content == b""
    assert result.model_spec.name == "default"
    assert result.model_spec.signature_name == "serving_default"
    assert result.model_spec.version.value == version


@pytest.mark.parametrize("directory", ["saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu"])
def test_predict_batch_from_tensor_content(servers, directory):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0], [5.0]], np.float32)))
    assert request.inputs["x"].tensor_content  # the official client packs bytes
    result = servers[directory].prediction_stub().Predict(request, RPC_TIMEOUT)
    np.testing.assert_array_equal(tf.make_ndarray(result.outputs["y"]), [[2.5], [3.0], [4.5]])


def test_one_typed_value_broadcasts_to_the_shape(servers):
    request = x_request()
    request.inputs["x"].tensor_shape.dim[0].size = 3
    request.inputs["x"].tensor_shape.dim.add().size = 1
    result = servers["saved_model_half_plus_two_cpu"].prediction_stub().Predict(request, RPC_TIMEOUT)
    np.testing.assert_array_equal(tf.make_ndarray(result.outputs["y"]), [[3.0], [3.0], [3.0]])


def test_shapes_are_fed_without_checking_the_signature(servers):
    """The signature says (-1, 1); TF Serving feeds a scalar and a (2, 2) as they are."""
    stub = servers["saved_model_half_plus_two_cpu"].prediction_stub()
    scalar = predict_pb2.PredictRequest()
    scalar.model_spec.name = "default"
    scalar.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32(2.0)))
    y = tf.make_ndarray(stub.Predict(scalar, RPC_TIMEOUT).outputs["y"])
    assert y.shape == () and y == 3.0
    square = predict_pb2.PredictRequest()
    square.model_spec.name = "default"
    square.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[0.0, 2.0], [4.0, 6.0]], np.float32)))
    np.testing.assert_array_equal(
        tf.make_ndarray(stub.Predict(square, RPC_TIMEOUT).outputs["y"]), [[2, 3], [4, 5]]
    )


def test_other_signature_by_name(servers):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x2_to_y3"
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
    result = servers["saved_model_half_plus_two_cpu"].prediction_stub().Predict(request, RPC_TIMEOUT)
    assert result.model_spec.signature_name == "regress_x2_to_y3"
    np.testing.assert_array_equal(tf.make_ndarray(result.outputs["outputs"]), [[4.0]])  # 0.5 * 2 + 3


def test_good_model_config_serves_both_models(good_config_file):
    """TF Serving's testGoodModelConfig."""
    with ServerThread(ModelServerOptions.for_config_file(good_config_file, port=0)) as server:
        stub = server.prediction_stub()
        for name, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
            for specify_output in (True, False):
                result = stub.Predict(x_request(name, specify_output=specify_output), RPC_TIMEOUT)
                assert list(result.outputs["y"].float_val) == [expected]
                assert result.model_spec.name == name and result.model_spec.version.value == 123
