"""Malformed and hostile requests to a real ``labeler-modelserver`` process
(mutual TLS) serving the four sample models: names that look like paths,
wrong dtypes and shapes, missing inputs, tensors that claim terabytes, and
reload requests pointing outside its root. Each gets a clear status naming
the problem, and the next normal Predict is answered."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from rpc.server import MAX_STATUS_MESSAGE_BYTES
from tfserving import codec
from tfserving.protos import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    tensor_pb2,
    types_pb2,
)

pytestmark = pytest.mark.timeout(180)


def encode_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    return codec.from_ndarray(array, raw=True)  # as the Labeler sends them


def decode_tensor(proto: tensor_pb2.TensorProto) -> np.ndarray:
    return codec.to_ndarray(proto, 1 << 20)


CODE = grpc.StatusCode
MAXLEN = 119  # the sample models' input length


def predict(name="movie", features=None, *, inputs=None, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    if inputs is None:
        inputs = {"input": encode_tensor(np.ones((2, MAXLEN), np.int32) if features is None else features)}
    for key, tensor in inputs.items():
        request.inputs[key].CopyFrom(tensor)
    return request


def tensor(
    dtype=types_pb2.DT_INT32, dims=(1, MAXLEN), content: bytes | None = None, unknown_rank=False, **typed
):
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = unknown_rank
    if content is not None:
        proto.tensor_content = content
    for field, values in typed.items():
        getattr(proto, field).extend(values)
    return proto


def without_spec() -> predict_pb2.PredictRequest:
    request = predict()
    request.ClearField("model_spec")
    return request


def filtered(*aliases) -> predict_pb2.PredictRequest:
    request = predict()
    request.output_filter.extend(aliases)
    return request


PREDICT_REJECTED = {
    "name with a slash": (
        predict("movie/../beauty"),
        CODE.NOT_FOUND,
        "Servable not found for request: Latest(movie/../beauty)",
    ),
    "name ..": (predict(".."), CODE.NOT_FOUND, "Latest(..)"),
    "name with a NUL": (predict("movie\x00"), CODE.NOT_FOUND, "Servable not found"),
    "name of 10 KB": (predict("m" * 10_240), CODE.NOT_FOUND, "Servable not found for request: Latest(mmmm"),
    "empty name": (predict(""), CODE.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    "no model spec": (without_spec(), CODE.INVALID_ARGUMENT, "Missing ModelSpec"),
    "missing version": (predict(version=7), CODE.NOT_FOUND, "Specific(movie, 7)"),
    "unknown version label": (
        predict(version_label="canary"),
        CODE.INVALID_ARGUMENT,
        "Unrecognized servable version label: canary",
    ),
    "unknown signature": (
        predict(signature_name="../serving_default"),
        CODE.FAILED_PRECONDITION,
        'Serving signature key "../serving_default" not found.',
    ),
    "float instead of int32": (
        predict(features=np.ones((1, MAXLEN), np.float32)),
        CODE.INVALID_ARGUMENT,
        "Expects arg[0] to be int32 but float is provided",
    ),
    "int64 instead of int32": (
        predict(features=np.ones((1, MAXLEN), np.int64)),
        CODE.INVALID_ARGUMENT,
        "int32 but int64 is provided",
    ),
    "strings instead of int32": (
        predict(inputs={"input": tensor(types_pb2.DT_STRING, (1, 2), string_val=[b"a", b"b"])}),
        CODE.INVALID_ARGUMENT,
        "int32 but string is provided",
    ),
    "unsupported dtype": (
        predict(inputs={"input": tensor(types_pb2.DT_VARIANT)}),
        CODE.INVALID_ARGUMENT,
        "dtype DT_VARIANT is not supported",
    ),
    # TensorFlow's own words, as TF Serving answers them.
    "rank 1": (predict(features=np.ones(MAXLEN, np.int32)), CODE.INVALID_ARGUMENT, "ndims must be >= 2"),
    "rank 3": (
        predict(features=np.ones((1, MAXLEN, 1), np.int32)),
        CODE.INVALID_ARGUMENT,
        "ndims must be >= 2",
    ),
    "no inputs": (
        predict(inputs={}),
        CODE.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1 len({}) != len({input}). Sent extra: {}. "
        "Missing but required: {input}.",
    ),
    "wrong input name": (
        predict(inputs={"x": encode_tensor(np.ones((1, MAXLEN), np.int32))}),
        CODE.INVALID_ARGUMENT,
        "Signature input alias: input(feed name:",
    ),
    "an extra input": (
        predict(
            inputs={
                "input": encode_tensor(np.ones((1, MAXLEN), np.int32)),
                "../../etc/passwd": encode_tensor(np.ones((1, MAXLEN), np.int32)),
            }
        ),
        CODE.INVALID_ARGUMENT,
        "Sent extra: {../../etc/passwd}",
    ),
    "content shorter than its shape": (
        predict(inputs={"input": tensor(content=b"\x00" * 7)}),
        CODE.INVALID_ARGUMENT,
        f"tensor_content has 7 bytes but shape [1, {MAXLEN}] of DT_INT32 needs {4 * MAXLEN}",
    ),
    "a terabyte shape with one value": (
        predict(inputs={"input": tensor(dims=(2**33, MAXLEN), int_val=[1])}),
        CODE.INVALID_ARGUMENT,
        "over this server's limit",
    ),
    "negative dimension": (
        predict(inputs={"input": tensor(dims=(-1, MAXLEN), int_val=[1])}),
        CODE.INVALID_ARGUMENT,
        "has a negative dimension",
    ),
    "unknown rank": (
        predict(inputs={"input": tensor(dims=(), unknown_rank=True, int_val=[1])}),
        CODE.INVALID_ARGUMENT,
        "unknown rank",
    ),
    "unknown output": (
        filtered("logits"),
        CODE.INVALID_ARGUMENT,
        "output tensor alias not found in signature: logits",
    ),
    "duplicate output": (
        filtered("probability", "probability"),
        CODE.INVALID_ARGUMENT,
        "duplicate output tensor alias",
    ),
}


@pytest.fixture(scope="module")
def channel(secure_stack):
    with secure_stack.modelserver_channel() as channel:
        yield channel


@pytest.fixture(scope="module")
def prediction(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def assert_still_serving(prediction) -> None:
    reply = prediction.Predict(predict(features=np.zeros((3, MAXLEN), np.int32)), timeout=30)
    probabilities = decode_tensor(reply.outputs["probability"])
    assert probabilities.shape == (3, 1) and ((probabilities >= 0) & (probabilities <= 1)).all()


def rejected(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=30)
    return err.value


@pytest.mark.parametrize("case", list(PREDICT_REJECTED))
def test_predict_rejects_with_a_clear_status(prediction, case):
    request, code, says = PREDICT_REJECTED[case]
    err = rejected(prediction.Predict, request)
    assert err.code() == code, err.details()
    assert says in err.details()
    assert len(err.details().encode()) <= MAX_STATUS_MESSAGE_BYTES  # a 10 KB name is not echoed back whole
    assert_still_serving(prediction)


def test_ids_outside_the_embedding_table_are_rejected_not_crashing(prediction):
    # (Small negative ids count from the table's end, as Keras' take does.)
    for bad_id in (2**31 - 1, 10**6, -(2**31)):
        err = rejected(prediction.Predict, predict(features=np.full((1, MAXLEN), bad_id, np.int32)))
        assert err.code() == CODE.INVALID_ARGUMENT, err.details()
        assert "indices[0,0] = " in err.details() and "is not in [0, " in err.details()
        assert_still_serving(prediction)


def test_rows_of_another_length_are_answered_as_tf_serving_does(prediction):
    # TF Serving checks dtypes, not static shapes: the graph averages over
    # whatever length it is fed. The Labeler always sends the model's maxlen.
    reply = prediction.Predict(predict(features=np.ones((1, 5), np.int32)), timeout=30)
    assert decode_tensor(reply.outputs["probability"]).shape == (1, 1)


def test_an_empty_batch_is_answered_empty(prediction):
    reply = prediction.Predict(predict(features=np.zeros((0, MAXLEN), np.int32)), timeout=30)
    assert decode_tensor(reply.outputs["probability"]).shape == (0, 1)


@pytest.mark.parametrize("name", ["movie/../beauty", "..", "movie\x00", "/etc/passwd", "m" * 10_240])
def test_status_and_metadata_of_path_like_names_are_not_found(prediction, models, name):
    err = rejected(
        models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(model_spec={"name": name})
    )
    assert err.code() == CODE.NOT_FOUND and "Could not find any versions of model" in err.details()
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": name}, metadata_field=["signature_def"]
    )
    err = rejected(prediction.GetModelMetadata, request)
    assert err.code() == CODE.NOT_FOUND and "Servable not found" in err.details()
    assert_still_serving(prediction)


@pytest.mark.parametrize("base_path", ["/etc", "../../../../etc", "/proc/self/cwd/..", "var/../../.."])
def test_reload_outside_the_root_is_refused_and_changes_nothing(prediction, models, secure_stack, base_path):
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.add(
        name="movie", base_path=base_path, model_platform="tensorflow"
    )
    err = rejected(models.HandleReloadConfigRequest, request)
    assert err.code() == CODE.INVALID_ARGUMENT, err.details()
    assert f"base_path {base_path}, outside" in err.details()
    for model in ("movie", "beauty", "star", "fashion"):
        reply = models.GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": model}), timeout=30
        )
        assert [s.state for s in reply.model_version_status] == [
            get_model_status_pb2.ModelVersionStatus.AVAILABLE
        ]
    assert_still_serving(prediction)
