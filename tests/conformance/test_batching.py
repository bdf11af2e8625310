"""Server-side batching (--enable_batching): TF Serving's BatchingParameters file,
concatenate along dimension 0, run once, split; TF Serving's batching errors."""

from __future__ import annotations

import asyncio
import concurrent.futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from modelserver.batching import Batcher, BatchingOptions, parse_batching_parameters, read_batching_parameters
from modelserver.loader import load_version
from modelserver.model_config import ConfigFileError
from modelserver.server import ModelServerOptions
from rpc import errors
from tests.support.modelserver_thread import RPC_TIMEOUT, ServerThread

pytestmark = pytest.mark.timeout(120)


def test_tf_servings_batching_file_parses(testdata):
    assert read_batching_parameters(testdata / "batching_config.txt") == BatchingOptions(
        max_batch_size=128, batch_timeout_micros=0, max_enqueued_batches=1000000, num_batch_threads=8
    )


def test_batching_file_errors():
    with pytest.raises(ConfigFileError, match='has no field named "max_batch"'):
        parse_batching_parameters("max_batch { value: 1 }")
    with pytest.raises(ConfigFileError, match="max_batch_size must be >= 1"):
        parse_batching_parameters("max_batch_size { value: 0 }")
    # Fields TF Serving knows but that only tune padding are accepted.
    assert (
        parse_batching_parameters("allowed_batch_sizes: 8 pad_variable_length_inputs: true").max_batch_size
        == 1000
    )


@pytest.fixture(scope="module")
def half_plus_two(testdata):
    version = load_version("default", 123, testdata / "saved_model_half_plus_two_cpu" / "00000123")
    yield version
    version.retire()


def run_batched(version, options: BatchingOptions, inputs: list[np.ndarray]):
    """Submit every input at once to one Batcher; returns (outputs or errors, batcher)."""
    signature = version.signatures["serving_default"]
    x, y = signature.inputs["x"], signature.outputs["y"]

    def execute(arrays):
        return version.run([(x, arrays[0])], [y])

    async def scenario():
        with concurrent.futures.ThreadPoolExecutor(4) as executor:
            batcher = Batcher(options, executor)
            results = await asyncio.gather(
                *(batcher.run(("x", a.dtype.str, a.shape[1:]), [a], execute) for a in inputs),
                return_exceptions=True,
            )
            return results, batcher

    return asyncio.run(scenario())


def test_concurrent_requests_run_as_one_batch(half_plus_two):
    # A long timeout: the batch goes when it is full, so this cannot be flaky.
    options = BatchingOptions(max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=1)
    inputs = [
        np.array([[1.0]], np.float32),
        np.array([[2.0], [3.0]], np.float32),
        np.array([[5.0]], np.float32),
    ]
    results, batcher = run_batched(half_plus_two, options, inputs)
    assert (batcher.batches_run, batcher.tasks_run) == (1, 3)
    assert [r[0].tolist() for r in results] == [[[2.5]], [[3.0], [3.5]], [[4.5]]]


def test_requests_of_different_shapes_batch_separately(half_plus_two):
    options = BatchingOptions(max_batch_size=2, batch_timeout_micros=60_000_000, num_batch_threads=2)
    inputs = [
        np.array([[1.0]], np.float32),
        np.array([[1.0, 3.0]], np.float32),
        np.array([[5.0]], np.float32),
        np.array([[5.0, 7.0]], np.float32),
    ]
    results, batcher = run_batched(half_plus_two, options, inputs)
    assert batcher.batches_run == 2
    assert [r[0].tolist() for r in results] == [[[2.5]], [[2.5, 3.5]], [[4.5]], [[4.5, 5.5]]]


def test_tf_servings_batching_errors(half_plus_two):
    options = BatchingOptions(max_batch_size=2, batch_timeout_micros=0, num_batch_threads=1)
    results, _ = run_batched(half_plus_two, options, [np.float32(1.0), np.zeros((3, 1), np.float32)])
    assert isinstance(results[0], errors.InvalidArgument)
    assert str(results[0]) == "Batching Run() input tensors must have at least one dimension"
    assert isinstance(results[1], errors.InvalidArgument)
    assert str(results[1]) == "Task size 3 is larger than maximum input batch size 2"
    splitting = BatchingOptions(max_batch_size=2, batch_timeout_micros=0, enable_large_batch_splitting=True)
    results, _ = run_batched(half_plus_two, splitting, [np.zeros((3, 1), np.float32)])
    assert results[0][0].tolist() == [[2.0]] * 3


def test_server_with_batching_answers_every_request_right(testdata):
    options = ModelServerOptions.for_model(
        "default",
        testdata / "saved_model_half_plus_two_cpu",
        port=0,
        batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=2000, num_batch_threads=2),
    )
    with ServerThread(options) as server:
        stub = server.prediction_stub()
        futures = []
        for i in range(32):
            request = predict_pb2.PredictRequest(model_spec={"name": "default"})
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[i], [i + 0.5]], np.float32)))
            futures.append((i, stub.Predict.future(request, RPC_TIMEOUT)))
        for i, future in futures:
            response = future.result()
            np.testing.assert_array_equal(
                tf.make_ndarray(response.outputs["y"]), [[0.5 * i + 2], [0.5 * i + 2.25]]
            )
            assert response.model_spec.version.value == 123
        scalar = predict_pb2.PredictRequest(model_spec={"name": "default"})
        scalar.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32(2.0)))
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(scalar, RPC_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "Batching Run() input tensors must have at least one dimension"
