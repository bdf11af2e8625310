"""ModelService.HandleReloadConfigRequest: adding and removing models, labels,
and what a reload may not do."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2, predict_pb2

from modelserver.model_config import parse_model_server_config
from modelserver.server import ModelServerOptions
from tests.support.modelserver_thread import RPC_TIMEOUT, ServerThread

pytestmark = pytest.mark.timeout(120)

State = get_model_status_pb2.ModelVersionStatus.State


def model_entry(name: str, path, extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" {extra} }}'


def reload_request(*entries: str) -> model_management_pb2.ReloadConfigRequest:
    config = parse_model_server_config(f"model_config_list {{ {' '.join(entries)} }}")
    return model_management_pb2.ReloadConfigRequest(config=config)


def predict(server, name: str, **spec) -> tuple[float, int]:
    request = predict_pb2.PredictRequest(model_spec={"name": name, **spec})
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
    response = server.prediction_stub().Predict(request, RPC_TIMEOUT)
    return float(tf.make_ndarray(response.outputs["y"])[0, 0]), response.model_spec.version.value


@pytest.fixture
def server(testdata):
    options = ModelServerOptions.for_model(
        "half_plus_two", testdata / "saved_model_half_plus_two_cpu", port=0, reload_base_path_root=testdata
    )
    with ServerThread(options) as running:
        yield running


def test_reload_adds_and_removes_models(server, testdata):
    two = model_entry("half_plus_two", testdata / "saved_model_half_plus_two_cpu")
    three = model_entry("half_plus_three", testdata / "saved_model_half_plus_three")
    stub = server.model_stub()

    response = stub.HandleReloadConfigRequest(reload_request(two, three), RPC_TIMEOUT)
    assert response.HasField("status") and response.status.error_code == 0
    assert predict(server, "half_plus_three") == (4.0, 123)
    assert predict(server, "half_plus_two") == (3.0, 123)

    stub.HandleReloadConfigRequest(reload_request(three), RPC_TIMEOUT)
    with pytest.raises(grpc.RpcError) as info:
        predict(server, "half_plus_two")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Servable not found for request: Latest(half_plus_two)"
    status = stub.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "half_plus_two"})
    )
    assert [(s.version, s.state) for s in status.model_version_status] == [(123, State.END)]
    assert predict(server, "half_plus_three") == (4.0, 123)


def test_reload_changes_policy_and_labels(server, testdata):
    path = testdata / "saved_model_half_plus_two_2_versions"
    stub = server.model_stub()
    stub.HandleReloadConfigRequest(reload_request(model_entry("two", path)), RPC_TIMEOUT)
    assert predict(server, "two") == (3.0, 124)
    all_labelled = model_entry(
        "two", path, 'model_version_policy { all {} } version_labels { key: "old" value: 123 }'
    )
    stub.HandleReloadConfigRequest(reload_request(all_labelled), RPC_TIMEOUT)
    assert predict(server, "two", version_label="old") == (3.0, 123)
    assert predict(server, "two") == (3.0, 124)


def test_reload_with_a_label_on_an_unavailable_version_changes_nothing(server, testdata):
    bad = model_entry(
        "half_plus_three",
        testdata / "saved_model_half_plus_three",
        'version_labels { key: "next" value: 999 }',
    )
    with pytest.raises(grpc.RpcError) as info:
        server.model_stub().HandleReloadConfigRequest(reload_request(bad), RPC_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == (
        "Request to assign label to version 999 of model half_plus_three, "
        "which is not currently available for inference"
    )
    assert predict(server, "half_plus_two") == (3.0, 123)  # the old config still serves
    with pytest.raises(grpc.RpcError):
        predict(server, "half_plus_three")


def test_reload_rejects_what_it_cannot_apply(server, testdata, tmp_path):
    stub = server.model_stub()
    two = model_entry("half_plus_two", testdata / "saved_model_half_plus_two_cpu")
    custom = model_management_pb2.ReloadConfigRequest()
    custom.config.custom_model_config.type_url = "type.googleapis.com/x"
    cases = [
        (
            custom,
            grpc.StatusCode.INVALID_ARGUMENT,
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported",
        ),
        (
            reload_request(model_entry("x", tmp_path)),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Model x has base_path {tmp_path}, outside {testdata.resolve()}",
        ),
        # Applied (x is served once versions appear, as in TF Serving), but reported.
        (
            reload_request(two, model_entry("x", testdata / "missing")),
            grpc.StatusCode.UNKNOWN,
            "1 model(s) did not become available: {{x: base path",
        ),
        (
            reload_request(model_entry("a", testdata), model_entry("a", testdata)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Illegal to list model a multiple times in config list",
        ),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(request, RPC_TIMEOUT)
        assert info.value.code() == code
        assert info.value.details().startswith(message)
    assert predict(server, "half_plus_two") == (3.0, 123)
