"""New model versions while serving: labeler-modelserver (a real process, with
deploy/models.config) picks up a version written into a model's directory and
switches to it with no failed request; in-flight requests keep the version they
started on; a broken version never replaces a working one."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from modelserver.server import ModelServerOptions
from tests.support.modelserver_process import ModelServerProcess
from tests.support.modelserver_thread import REPO, RPC_TIMEOUT, ServerThread

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

State = get_model_status_pb2.ModelVersionStatus.State
# Upper bound for a background poll to notice a change; a failed bound fails the
# test, but nothing asserts how fast it happened.
PATIENCE_S = 120.0


def features(trained_models, model: str) -> np.ndarray:
    documents = [["霸王别姬", "电影", "演员"], ["口红", "粉底"]]
    return trained_models[model].pipeline.transform(documents).astype(np.int32)


def predict_request(model: str, x: np.ndarray, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec={"name": model, **spec})
    request.inputs["input"].CopyFrom(tf.make_tensor_proto(x))
    return request


def statuses(channel, model: str) -> list[tuple[int, int]]:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    response = stub.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": model}), RPC_TIMEOUT
    )
    return [(s.version, s.state) for s in response.model_version_status]


def workdir_with_models(tmp_path, model_root):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "models").symlink_to(model_root, target_is_directory=True)
    return tmp_path


def test_new_version_is_served_without_a_failed_request(
    model_root_copy, trained_models, export_new_version, tmp_path
):
    workdir = workdir_with_models(tmp_path, model_root_copy)
    old = trained_models["movie"].version
    x = features(trained_models, "movie")
    args = [
        "--port=0",
        f"--model_config_file={REPO / 'deploy' / 'models.config'}",
        "--file_system_poll_wait_seconds=0.5",
    ]
    with (
        ModelServerProcess(args, cwd=workdir) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answered: dict[int, int] = {}
        failures: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        def drive() -> None:
            while not stop.is_set():
                try:
                    response = stub.Predict(predict_request("movie", x), RPC_TIMEOUT)
                    version = response.model_spec.version.value
                    assert tf.make_ndarray(response.outputs["probability"]).shape == (2, 1)
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    answered[version] = answered.get(version, 0) + 1

        drivers = [threading.Thread(target=drive) for _ in range(4)]
        for thread in drivers:
            thread.start()
        try:
            while not answered.get(old):
                time.sleep(0.05)
            new = export_new_version(model_root_copy, "movie")
            assert new > old
            deadline = time.monotonic() + PATIENCE_S
            while answered.get(new, 0) < 20 and time.monotonic() < deadline and not failures:
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in drivers:
                thread.join(60)
        assert failures == []
        assert answered.get(new, 0) >= 20, f"version {new} never answered: {answered}"
        assert statuses(channel, "movie") == [(new, State.AVAILABLE), (old, State.END)]
        # The other models were untouched.
        assert statuses(channel, "beauty") == [(trained_models["beauty"].version, State.AVAILABLE)]
        assert server.stop() == 0


def test_in_flight_request_keeps_its_version(model_root_copy, trained_models, export_new_version):
    options = ModelServerOptions.for_model(
        "movie", model_root_copy / "movie", port=0, file_system_poll_wait_seconds=0
    )
    with ServerThread(options) as server:
        old = trained_models["movie"].version
        spec = predict_request("movie", features(trained_models, "movie")).model_spec
        in_flight = server.manager.acquire(spec)  # what a Predict holds while it runs
        assert in_flight.version == old
        new = export_new_version(model_root_copy, "movie")
        server.run(server.manager.poll_once())
        assert server.manager.served_versions("movie") == [new]
        # Swapped out, but its session stays open for the call still running.
        assert not in_flight.closed
        signature = in_flight.signatures["serving_default"]
        x = features(trained_models, "movie")
        (probability,) = in_flight.run([(signature.inputs["input"], x)], [signature.outputs["probability"]])
        np.testing.assert_allclose(
            probability, trained_models["movie"].model.predict(x, verbose=0), atol=1e-5
        )
        in_flight.release()
        assert in_flight.closed
        response = server.prediction_stub().Predict(predict_request("movie", x), RPC_TIMEOUT)
        assert response.model_spec.version.value == new


def test_broken_new_version_does_not_replace_a_working_one(model_root_copy, trained_models):
    options = ModelServerOptions.for_model(
        "movie", model_root_copy / "movie", port=0, file_system_poll_wait_seconds=0
    )
    with ServerThread(options) as server:
        old = trained_models["movie"].version
        broken = model_root_copy / "movie" / str(old + 1)
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        (model_root_copy / "movie" / "notes").mkdir()  # not a number: ignored
        server.run(server.manager.poll_once())
        x = features(trained_models, "movie")
        response = server.prediction_stub().Predict(predict_request("movie", x), RPC_TIMEOUT)
        assert response.model_spec.version.value == old
        status = server.model_stub().GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "movie"}), RPC_TIMEOUT
        )
        by_version = {s.version: s for s in status.model_version_status}
        assert by_version[old].state == State.AVAILABLE
        assert by_version[old + 1].state == State.END and by_version[old + 1].status.error_code != 0
        assert str(broken) in by_version[old + 1].status.error_message


def test_config_file_changes_are_applied(model_root_copy, trained_models, tmp_path):
    config = tmp_path / "models.config"

    def write(models):
        entries = " ".join(
            f'config {{ name: "{m}" base_path: "{model_root_copy / m}" model_platform: "tensorflow" }}'
            for m in models
        )
        config.write_text(f"model_config_list {{ {entries} }}")

    write(["movie"])
    options = ModelServerOptions.for_config_file(
        config, port=0, file_system_poll_wait_seconds=0, model_config_file_poll_wait_seconds=0.2
    )
    with ServerThread(options) as server:
        assert server.manager.served_versions("star") == []
        write(["movie", "star"])
        deadline = time.monotonic() + PATIENCE_S
        while not server.manager.served_versions("star") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.manager.served_versions("star") == [trained_models["star"].version]
        x = features(trained_models, "star")
        response = server.prediction_stub().Predict(predict_request("star", x), RPC_TIMEOUT)
        assert response.model_spec.version.value == trained_models["star"].version


def test_a_config_edit_made_while_the_server_starts_is_applied(model_root_copy, trained_models, tmp_path):
    """The file is compared with the config the server started with, not with
    whatever it held when polling began, so an edit in between is not lost."""
    config = tmp_path / "models.config"

    def write(models):
        entries = " ".join(
            f'config {{ name: "{m}" base_path: "{model_root_copy / m}" model_platform: "tensorflow" }}'
            for m in models
        )
        config.write_text(f"model_config_list {{ {entries} }}")

    write(["movie"])
    options = ModelServerOptions.for_config_file(
        config, port=0, file_system_poll_wait_seconds=0, model_config_file_poll_wait_seconds=0.2
    )
    write(["movie", "star"])  # after the server read its config, before it polls
    with ServerThread(options) as server:
        deadline = time.monotonic() + PATIENCE_S
        while not server.manager.served_versions("star") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.manager.served_versions("star") == [trained_models["star"].version]
