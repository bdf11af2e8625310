"""Warm-up and rollout fallback (issue 17), with real TensorFlow models
exported by the Trainer's export and served by real labeler-modelserver
instances on 127.0.0.1:0.

The models are built, not trained (random weights, seeded per version): the
tests need real SavedModels whose versions answer differently, not accuracy.

- The export writes ``assets.extra/tf_serving_warmup_requests``: a TFRecord
  (framing and masked CRC32C checked here byte by byte) of PredictionLog
  records that the official ``tensorflow_serving.apis`` stubs parse.
- labeler-modelserver replays them before the version is AVAILABLE; a
  failing record keeps the version from being served, as in TF Serving.
- Two replicas on different versions behind one round-robin target: a
  Labeler that moved to the new version answers every call, from the
  previous version where a replica does not serve the new one yet.
"""

from __future__ import annotations

import pathlib
import shutil
import struct

import grpc
import numpy as np
import pytest

from labeler.v1 import labeler_pb2
from tests.support.labeler_support import (
    EXAMPLE,
    BackgroundLoop,
    ModelServer,
    labeler_config,
    stub,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)

DOCS = [EXAMPLE, ["口红", "色号", "好看"], ["明星", "演唱会", "门票"], ["时装", "周", "新款"]] * 3


@pytest.fixture(scope="module")
def loop():
    background = BackgroundLoop()
    yield background
    background.close()


def export(model_root: pathlib.Path, version: int, seed: int | None = None) -> pathlib.Path:
    """Export one version of ``movie`` through the Trainer's export."""
    import keras

    from modelspec.features import FeaturePipeline, FeatureSettings
    from trainer.recipes.export import export_version
    from trainer.recipes.fasttext import build_model

    keras.utils.set_random_seed(version if seed is None else seed)
    pipeline = FeaturePipeline.fit(
        DOCS, FeatureSettings(cutlen=8, ngram_range=2, maxlen=12), min_ngram_count=1
    )
    model = build_model(pipeline.num_features, 8, pipeline.settings.maxlen, 0.01)
    _, path = export_version(model, pipeline, model_root, "movie", "影视", version=version)
    return path


# -- TFRecord framing, checked without TensorFlow ------------------------------


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path: pathlib.Path) -> list[bytes]:
    """Each record: uint64 length, uint32 masked CRC32C of the length, the
    bytes, uint32 masked CRC32C of the bytes (little-endian)."""
    data = path.read_bytes()
    records, at = [], 0
    while at < len(data):
        header = data[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[at + 8 : at + 12])
        assert length_crc == _masked(header)
        body = data[at + 12 : at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[at + 12 + length : at + 16 + length])
        assert body_crc == _masked(body)
        records.append(body)
        at += 16 + length
    return records


def test_export_writes_warmup_requests_in_tf_servings_format(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    from trainer.recipes.export import WARMUP_BATCH_SIZES

    path = export(tmp_path, 1) / "assets.extra" / "tf_serving_warmup_requests"
    records = _records(path)
    assert 1 <= len(records) <= 1000
    batches = []
    for record in records:
        entry = prediction_log_pb2.PredictionLog.FromString(record)
        assert entry.WhichOneof("log_type") == "predict_log"
        request = entry.predict_log.request
        assert request.model_spec.name == "movie"
        assert request.model_spec.signature_name == "serving_default"
        tensor = request.inputs["input"]
        dims = [d.size for d in tensor.tensor_shape.dim]
        assert dims[1] == 12 and tensor.dtype == 3  # DT_INT32, [batch, maxlen]
        values = np.frombuffer(tensor.tensor_content, dtype="<i4")
        assert values.size == dims[0] * dims[1] and values.max() > 0  # real word ids
        batches.append(dims[0])
    assert tuple(batches) == WARMUP_BATCH_SIZES


def _status(server: ModelServer) -> dict[int, tuple[str, str]]:
    from tfserving.protos import get_model_status_pb2, model_service_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "movie"
        reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    states = get_model_status_pb2.ModelVersionStatus.State
    return {s.version: (states.Name(s.state), s.status.error_message) for s in reply.model_version_status}


def test_modelserver_replays_warmup_before_available(loop, tmp_path):
    from tfserving.protos import model_pb2

    export(tmp_path, 1)
    server = loop.run(ModelServer(tmp_path, ["movie"], poll_s=0.2).start())
    try:
        assert _status(server)[1][0] == "AVAILABLE"
        spec = model_pb2.ModelSpec(name="movie")
        spec.version.value = 1
        with server.manager.servable(spec) as version:
            # Set by the load itself, which ends before the manager marks the
            # version AVAILABLE: every record was replayed first.
            assert version.warmup_requests == 4

        # A version whose warm-up fails is never served, as in TF Serving.
        from tensorflow_serving.apis import prediction_log_pb2

        staging = tmp_path / "staging"
        bad = export(staging, 2)
        entry = prediction_log_pb2.PredictionLog()
        entry.predict_log.request.model_spec.signature_name = "no_such_signature"
        import tensorflow as tf

        with tf.io.TFRecordWriter(str(bad / "assets.extra" / "tf_serving_warmup_requests")) as writer:
            writer.write(entry.SerializeToString())
        shutil.move(str(bad), str(tmp_path / "movie" / "2"))
        wait_until(lambda: 2 in _status(server), timeout=60, what="version 2 to be tried")
        wait_until(lambda: _status(server)[2][0] == "END", timeout=60, what="version 2's load to fail")
        state, message = _status(server)[2]
        assert "warm-up record 1" in message and "no_such_signature" in message
        assert _status(server)[1][0] == "AVAILABLE"  # still serving the one that warmed up
    finally:
        loop.run(server.stop())


def test_version_without_warmup_file_still_loads(loop, tmp_path):
    path = export(tmp_path, 1)
    (path / "assets.extra" / "tf_serving_warmup_requests").unlink()
    server = loop.run(ModelServer(tmp_path, ["movie"], poll_s=0.2).start())
    try:
        assert _status(server)[1][0] == "AVAILABLE"
    finally:
        loop.run(server.stop())


def test_rollout_fallback_across_two_replicas_on_different_versions(loop, tmp_path):
    from labeler.server import create_server

    # The Labeler's model root has both versions' features; replica A serves
    # version 1 only, replica B version 2 only (mid-rollout).
    labeler_root = tmp_path / "labeler"
    export(labeler_root, 1)
    export(labeler_root, 2)
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    (root_a / "movie").mkdir(parents=True)
    (root_b / "movie").mkdir(parents=True)
    shutil.copytree(labeler_root / "movie" / "1", root_a / "movie" / "1")
    shutil.copytree(labeler_root / "movie" / "2", root_b / "movie" / "2")
    replica_a = loop.run(ModelServer(root_a, ["movie"], poll_s=0.2).start())
    replica_b = loop.run(ModelServer(root_b, ["movie"], poll_s=0.2).start())
    target = f"ipv4:127.0.0.1:{replica_a.port},127.0.0.1:{replica_b.port}"
    config = labeler_config(labeler_root, {"movie": target}, poll_ms=100, timeout_ms=5000)
    config.prediction_cache.disabled = True  # every call reaches a replica
    server = loop.run(create_server(config))
    port = server.port
    try:
        assert loop.run(server.app.wait_ready(60))

        def moved() -> bool:
            binding = server.app.registry.snapshot().bindings["影视"]
            return (
                binding.loaded.version == 2 and binding.previous is not None and binding.previous.version == 1
            )

        # Polls reach A and B in turn: the Labeler takes version 2 from B and
        # keeps version 1 (seen on A) for fallback.
        wait_until(moved, timeout=60, what="the Labeler to use version 2 and keep version 1")
        channel, labeler = stub(port)
        with channel:
            replies = [
                labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0), timeout=10)
                for _ in range(12)
            ]
        assert all(not r.failures and len(r.labels) == 1 for r in replies)
        versions = {r.labels[0].model_version for r in replies}
        # Round robin reached both replicas: some calls were answered by
        # version 2 (replica B), the others fell back to version 1 (replica A).
        assert versions == {1, 2}
        by_version = {r.labels[0].model_version: r.labels[0].probability for r in replies}
        assert by_version[1] != by_version[2]
        # Polls saw replica A on version 1 all along, but the Labeler stayed on 2.
        assert moved()
    finally:
        loop.run(server.stop(None))
        loop.run(server.app.close())
        loop.run(replica_a.stop())
        loop.run(replica_b.stop())
