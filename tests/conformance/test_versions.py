"""GetModelMetadata against TF Serving's JSON fixtures, GetModelStatus, version
policies (latest / all / specific), requests by version and by version label."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2

from modelserver.model_config import parse_model_server_config
from modelserver.server import ModelServerOptions
from rpc import errors
from tests.support.modelserver_thread import RPC_TIMEOUT, ServerThread

pytestmark = pytest.mark.timeout(120)

TWO = "saved_model_half_plus_two_2_versions"
State = get_model_status_pb2.ModelVersionStatus.State


def two_versions_options(testdata, policy="", labels="", **options) -> ModelServerOptions:
    config = parse_model_server_config(f"""
        model_config_list {{ config {{
          name: "{TWO}" base_path: "{testdata / TWO}" model_platform: "tensorflow"
          {policy} {labels} }} }}""")
    return ModelServerOptions(model_config=config, port=0, **options)


def metadata(server, **spec) -> get_model_metadata_pb2.GetModelMetadataResponse:
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=spec, metadata_field=["signature_def"]
    )
    return server.prediction_stub().GetModelMetadata(request, RPC_TIMEOUT)


def assert_matches_fixture(response, fixture_path) -> None:
    """The fixture is TF Serving's JSON rendering: metadata.signature_def is the
    SignatureDefMap its Any holds."""
    fixture = json.loads(fixture_path.read_text())
    assert response.model_spec == json_format.ParseDict(fixture["model_spec"], model_pb2.ModelSpec())
    expected = json_format.ParseDict(
        fixture["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap()
    )
    actual = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(actual)
    assert (
        response.metadata["signature_def"].type_url
        == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    )
    assert actual == expected


def test_metadata_of_half_plus_two(testdata):
    with ServerThread(
        ModelServerOptions.for_model("default", testdata / "saved_model_half_plus_two_cpu", port=0)
    ) as s:
        assert_matches_fixture(metadata(s, name="default"), testdata / "half_plus_two_model_metadata.json")


def test_metadata_of_two_versions_pinned_to_123(testdata):
    """TF Serving's HTTP handler test: specific version 123, labelled."""
    options = two_versions_options(
        testdata,
        "model_version_policy { specific { versions: 123 } }",
        'version_labels { key: "Version_Label" value: 123 }',
    )
    with ServerThread(options) as s:
        assert_matches_fixture(metadata(s, name=TWO), testdata / f"{TWO}_metadata.json")
        assert_matches_fixture(
            metadata(s, name=TWO, version_label="Version_Label"), testdata / f"{TWO}_metadata.json"
        )


def statuses(server, **spec) -> list[tuple[int, int, int]]:
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
    response = server.model_stub().GetModelStatus(request, RPC_TIMEOUT)
    return [(s.version, s.state, s.status.error_code) for s in response.model_version_status]


def answering_version(server, **spec) -> int:
    request = predict_pb2.PredictRequest(model_spec={"name": TWO, **spec})
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
    response = server.prediction_stub().Predict(request, RPC_TIMEOUT)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [[3.0]])
    return response.model_spec.version.value


def not_found(server, **spec) -> str:
    with pytest.raises(grpc.RpcError) as info:
        answering_version(server, **spec)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    return info.value.details()


def test_status_of_a_loaded_model(testdata):
    """TF Serving's testGetModelStatus: one version, AVAILABLE, status OK."""
    with ServerThread(
        ModelServerOptions.for_model("default", testdata / "saved_model_half_plus_two_cpu", port=0)
    ) as s:
        assert statuses(s, name="default") == [(123, State.AVAILABLE, 0)]
        assert statuses(s, name="default", version={"value": 123}) == [(123, State.AVAILABLE, 0)]


def test_default_policy_serves_the_latest_version_only(testdata):
    with ServerThread(two_versions_options(testdata)) as s:
        assert statuses(s, name=TWO) == [(124, State.AVAILABLE, 0)]
        assert answering_version(s) == 124
        assert answering_version(s, version={"value": 124}) == 124
        assert not_found(s, version={"value": 123}) == f"Servable not found for request: Specific({TWO}, 123)"


@pytest.mark.parametrize(
    "policy",
    ["model_version_policy { all {} }", "model_version_policy { latest { num_versions: 2 } }"],
)
def test_policies_serving_both_versions(testdata, policy):
    labels = 'version_labels { key: "stable" value: 123 } version_labels { key: "canary" value: 124 }'
    with ServerThread(two_versions_options(testdata, policy, labels)) as s:
        assert statuses(s, name=TWO) == [(124, State.AVAILABLE, 0), (123, State.AVAILABLE, 0)]
        assert answering_version(s) == 124
        assert answering_version(s, version={"value": 123}) == 123
        assert answering_version(s, version_label="stable") == 123
        assert answering_version(s, version_label="canary") == 124


def test_specific_policy(testdata):
    with ServerThread(
        two_versions_options(testdata, "model_version_policy { specific { versions: 123 } }")
    ) as s:
        assert statuses(s, name=TWO) == [(123, State.AVAILABLE, 0)]
        assert answering_version(s) == 123
        assert not_found(s, version={"value": 124}) == f"Servable not found for request: Specific({TWO}, 124)"


def test_label_on_an_unavailable_version_refuses_to_start(testdata):
    options = two_versions_options(
        testdata,
        "model_version_policy { specific { versions: 123 } }",
        'version_labels { key: "next" value: 124 }',
    )
    with pytest.raises(errors.FailedPrecondition) as info, ServerThread(options):
        pass
    assert str(info.value) == (
        f"Request to assign label to version 124 of model {TWO}, which is not currently available for inference"
    )


def test_label_on_an_unavailable_version_when_allowed(testdata):
    options = two_versions_options(
        testdata,
        "model_version_policy { specific { versions: 123 } }",
        'version_labels { key: "next" value: 124 }',
        allow_version_labels_for_unavailable_models=True,
    )
    with ServerThread(options) as s:
        assert not_found(s, version_label="next") == f"Servable not found for request: Specific({TWO}, 124)"
