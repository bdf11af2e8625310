"""The project's own label models (Keras, exported by the training recipe) served
through deploy/models.config: the same probabilities as the in-memory model,
for tensor_content and typed-field requests, and the advertised signature."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from modelserver.server import ModelServerOptions
from tests.support.modelserver_thread import REPO, RPC_TIMEOUT, ServerThread

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

MODELS = ("movie", "beauty", "star", "fashion")


@pytest.fixture(scope="module")
def served(trained_model_root, tmp_path_factory):
    """deploy/models.config as make run uses it: base paths var/models/<model>,
    relative to the working directory (here one whose var/models is the fixture root)."""
    workdir = tmp_path_factory.mktemp("workdir")
    (workdir / "var").mkdir()
    (workdir / "var" / "models").symlink_to(trained_model_root, target_is_directory=True)
    options = ModelServerOptions.for_config_file(
        REPO / "deploy" / "models.config", port=0, working_dir=workdir
    )
    with ServerThread(options) as server:
        yield server


@pytest.fixture(scope="module")
def documents(sample_corpus) -> list[list[str]]:
    lines = pathlib.Path(sample_corpus.test).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["words"] for line in lines[:24]]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("encoding", ["tensor_content", "int_val"])
def test_probabilities_match_the_trained_model(served, trained_models, documents, model, encoding):
    result = trained_models[model]
    features = result.pipeline.transform(documents).astype(np.int32)
    expected = result.model.predict(features, verbose=0)
    request = predict_pb2.PredictRequest(model_spec={"name": model})
    if encoding == "tensor_content":
        request.inputs["input"].CopyFrom(tf.make_tensor_proto(features))
    else:
        tensor = request.inputs["input"]
        tensor.dtype = types_pb2.DT_INT32
        tensor.tensor_shape.dim.add().size = features.shape[0]
        tensor.tensor_shape.dim.add().size = features.shape[1]
        tensor.int_val.extend(features.ravel().tolist())
    response = served.prediction_stub().Predict(request, RPC_TIMEOUT)
    assert response.model_spec.version.value == result.version
    assert response.model_spec.signature_name == "serving_default"
    probability = tf.make_ndarray(response.outputs["probability"])
    assert probability.shape == (len(documents), 1) and probability.dtype == np.float32
    np.testing.assert_allclose(probability, expected, atol=1e-5)


def test_signature_and_status(served, trained_models):
    for model in MODELS:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": model}, metadata_field=["signature_def"]
        )
        response = served.prediction_stub().GetModelMetadata(request, RPC_TIMEOUT)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        serving = signatures.signature_def["serving_default"]
        maxlen = trained_models[model].pipeline.settings.maxlen
        assert serving.inputs["input"].dtype == types_pb2.DT_INT32
        assert [d.size for d in serving.inputs["input"].tensor_shape.dim] == [-1, maxlen]
        assert serving.outputs["probability"].dtype == types_pb2.DT_FLOAT
        assert [d.size for d in serving.outputs["probability"].tensor_shape.dim] == [-1, 1]
        status_request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": model})
        status = served.model_stub().GetModelStatus(status_request, RPC_TIMEOUT)
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (trained_models[model].version, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        ]
