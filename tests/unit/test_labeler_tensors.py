"""The tensors the Labeler's TF Serving client sends (raw ``tensor_content``)
and reads (typed fields, as TF Serving answers), through tfserving.codec,
checked against TensorFlow's own encoder and decoder (the Labeler itself never
imports them); and the client's channel options."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from labeler.model_client import channel_options
from tfserving import codec
from tfserving.protos import tensor_pb2, types_pb2

LIMIT = 1 << 20


def encode_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    return codec.from_ndarray(array, raw=True)  # as ModelServerClient.predict does


def decode_tensor(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    return codec.to_ndarray(tensor, LIMIT)


@given(hnp.arrays(np.int32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=8)))
@settings(max_examples=50, deadline=None)
def test_int32_roundtrip(array):
    tensor = encode_tensor(array)
    assert tensor.dtype == types_pb2.DT_INT32
    assert [d.size for d in tensor.tensor_shape.dim] == list(array.shape)
    assert tensor.tensor_content == array.astype("<i4").tobytes()
    np.testing.assert_array_equal(decode_tensor(tensor), array)


def test_float_val_and_fill_rule():
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.25, 0.75])
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=1)
    np.testing.assert_allclose(decode_tensor(tensor), [[0.25], [0.75]])
    # TF's rule: a single typed value fills the whole tensor.
    filled = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.5])
    filled.tensor_shape.dim.add(size=3)
    np.testing.assert_allclose(decode_tensor(filled), [0.5, 0.5, 0.5])


def test_fewer_values_repeat_the_last_and_strings_have_no_raw_form():
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.1, 0.2])
    tensor.tensor_shape.dim.add(size=3)
    np.testing.assert_allclose(decode_tensor(tensor), [0.1, 0.2, 0.2])
    with pytest.raises(codec.TensorEncodeError, match="no tensor_content encoding"):
        encode_tensor(np.array(["a"]))


def test_matches_tensorflow_make_tensor_proto():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = pytest.importorskip("tensorflow")
    features = np.arange(2 * 119, dtype=np.int32).reshape(2, 119)
    ours = encode_tensor(features)
    np.testing.assert_array_equal(tf.make_ndarray(ours), features)
    theirs = tf.make_tensor_proto(np.array([[0.9], [0.1]], dtype=np.float32))
    np.testing.assert_allclose(decode_tensor(theirs), [[0.9], [0.1]], rtol=1e-6)
    halves = tf.make_tensor_proto(np.array([0.5, 0.25], dtype=np.float16))
    np.testing.assert_allclose(decode_tensor(halves), [0.5, 0.25])


def test_dns_targets_balance_over_replicas_and_retry_unavailable():
    options = dict(channel_options("dns:///tf-serving:8500"))
    assert options["grpc.lb_policy_name"] == "round_robin"
    assert options["grpc.max_receive_message_length"] > 4 * 1024 * 1024
    assert '"retryableStatusCodes": ["UNAVAILABLE"]' in options["grpc.service_config"]
    assert "grpc.lb_policy_name" not in dict(channel_options("localhost:8500"))


def test_client_sends_raw_features_and_reads_answers_with_tensorflows_rule():
    """ModelServerClient.predict against an in-process PredictionService that
    answers as TF Serving may: one typed value for the whole batch (filled),
    or a dtype that is no probability (a clear INTERNAL error)."""
    import asyncio

    import grpc

    from labeler.domain import ModelCallError
    from labeler.model_client import ModelServerClient
    from tfserving.protos import predict_pb2, prediction_service_pb2_grpc

    seen: list[np.ndarray] = []

    class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):  # noqa: N802 - gRPC's naming
            features = request.inputs["input"]
            assert features.tensor_content and not features.int_val  # raw, as TF Serving reads fastest
            seen.append(codec.to_ndarray(features, LIMIT))
            response = predict_pb2.PredictResponse()
            if request.model_spec.name == "strings":
                codec.from_ndarray(np.array([["x"], ["y"]], dtype=object), response.outputs["probability"])
            else:
                one = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.75])
                one.tensor_shape.dim.add(size=2)
                one.tensor_shape.dim.add(size=1)
                response.outputs["probability"].CopyFrom(one)
            return response

    async def scenario() -> None:
        server = grpc.aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = ModelServerClient(f"127.0.0.1:{port}")
        features = np.arange(2 * 4, dtype=np.int32).reshape(2, 4)
        deadline = asyncio.get_running_loop().time() + 10
        try:
            prediction = await client.predict(
                "movie", None, "serving_default", "input", "probability", features, deadline
            )
            np.testing.assert_allclose(prediction.probabilities, [0.75, 0.75])
            np.testing.assert_array_equal(seen[0], features)
            with pytest.raises(ModelCallError, match="unsupported tensor dtype DT_STRING") as info:
                await client.predict(
                    "strings", None, "serving_default", "input", "probability", features, deadline
                )
            assert info.value.code_name == "INTERNAL"
        finally:
            await client.close()
            await server.stop(None)

    asyncio.run(scenario())
