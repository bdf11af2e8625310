"""The ``labeler-modelserver`` command as a real process: TF Serving's flags,
a bad config refused at start-up, batching, health, reflection, SIGTERM."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.support.modelserver_process import ModelServerProcess, command

pytestmark = pytest.mark.timeout(180)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command(), *args], capture_output=True, text=True, timeout=120)


def test_bad_model_config_refuses_to_start(testdata):
    """TF Serving's testBadModelConfig: non-zero exit, 'Invalid protobuf file' in stderr."""
    bad = testdata / "bad_model_config.txt"
    result = run_cli("--port=0", f"--model_config_file={bad}")
    assert result.returncode != 0
    assert f"Invalid protobuf file: '{bad}'" in result.stderr
    assert "1:" in result.stderr.split("Invalid protobuf file", 1)[1]  # the parser's line:column


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "Both --model_base_path and --model_config_file are empty"),
        (["--model_config_file", "/nonexistent/models.config"], "cannot read model config file"),
        (["--model_base_path=/x", "--model_config_file=/y"], "mutually exclusive"),
        (["--model_base_path=/x", "--rest_api_port=8501"], "serves gRPC only"),
    ],
)
def test_bad_flags_refuse_to_start(args, message):
    result = run_cli("--port=0", *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_bad_batching_file_refuses_to_start(testdata, tmp_path):
    bad = tmp_path / "batching.txt"
    bad.write_text("max_batch_size { value: 8 }\nmax_batch_sise { value: 1 }\n")
    result = run_cli(
        "--port=0",
        f"--model_base_path={testdata / 'saved_model_half_plus_two_cpu'}",
        "--enable_batching",
        f"--batching_parameters_file={bad}",
    )
    assert result.returncode != 0
    assert f"Invalid protobuf file: '{bad}'" in result.stderr and "max_batch_sise" in result.stderr


def test_serves_good_config_with_batching_until_sigterm(testdata, good_config_file):
    # Both flag forms, as tensorflow_model_server accepts them.
    args = [
        "--port",
        "0",
        f"--model_config_file={good_config_file}",
        "--enable_batching",
        "--batching_parameters_file",
        str(testdata / "batching_config.txt"),
        "--file_system_poll_wait_seconds=1",
    ]
    with ModelServerProcess(args) as server:
        target = f"127.0.0.1:{server.port}"
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            expectations = {"half_plus_two": [[2.5], [3.0], [4.5]], "half_plus_three": [[3.5], [4.0], [5.5]]}
            for name, expected in expectations.items():
                request = predict_pb2.PredictRequest(model_spec={"name": name})
                request.inputs["x"].CopyFrom(
                    tf.make_tensor_proto(np.array([[1.0], [2.0], [5.0]], np.float32))
                )
                response = stub.Predict(request, 30)
                np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), expected)
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        grpcurl = pathlib.Path(sys.executable).parent / "grpcurl"
        if grpcurl.exists():  # reflection, as a grpcurl user sees it
            listed = subprocess.run(
                [grpcurl, "-plaintext", target, "list"], capture_output=True, text=True, timeout=60
            )
            assert "tensorflow.serving.PredictionService" in listed.stdout
            assert "tensorflow.serving.ModelService" in listed.stdout
            described = subprocess.run(
                [grpcurl, "-plaintext", target, "describe", "tensorflow.serving.PredictRequest"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "output_filter" in described.stdout, described.stderr
        assert server.stop() == 0
