"""A bundle through the whole path: the Trainer trains one multi-label model
(real fastText recipe, as a gated subprocess) on a small multi-label corpus;
labeler-modelserver serves it; the Labeler answers with the probabilities the
exported model computes for the same features."""

from __future__ import annotations

import pytest

from labeler.v1 import labeler_pb2
from modelspec.features import FeaturePipeline
from tests.support.labeler_support import BackgroundLoop, ModelServer, stub
from tests.support.trainer_support import make_config, running_trainer
from trainer.corpus import synthetic_labels, synthetic_vocabulary, write_many_label_corpus
from trainer.gate import GatePolicy
from trainer.recipes import RECIPES
from trainer.v1 import trainer_pb2

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]
S = trainer_pb2
LABELS = synthetic_labels(5)


def test_a_bundle_trained_by_the_trainer_is_served_and_answered_by_the_labeler(tmp_path):
    import tensorflow as tf

    gate = GatePolicy(
        cpu_normal=90, cpu_danger=101, memory_normal=90, memory_danger=95, warmup_s=1, window_s=1
    )
    config = make_config(
        tmp_path, gate=gate, sample_interval_s=0.25, registry=dict(RECIPES), default_recipe="fasttext"
    )
    write_many_label_corpus(config.data_root / "many", len(LABELS), docs_per_label=60, seed=2)
    hyperparameters = S.Hyperparameters(epochs=15, batch_size=16, embedding_dim=16, threads=1)
    with running_trainer(config) as trainer:
        started = trainer.start(
            "topics", label="", labels=LABELS, corpus="many/train.jsonl", hyperparameters=hyperparameters
        )
        assert list(started.labels) == LABELS and started.label == ""
        job = trainer.wait(started.job_id, timeout=600)
        assert job.state == S.JOB_STATE_SUCCEEDED, job.reason
        assert list(job.labels) == LABELS and job.progress.f1 > 0
        log = "\n".join(trainer.status(job.job_id, log_lines=50).log_tail)
    assert "label_metrics" in log
    version_dir = config.model_root / "topics" / str(job.model_version)
    pipeline, meta = FeaturePipeline.load(version_dir)
    assert meta["labels"] == LABELS

    words = [
        *synthetic_vocabulary(len(LABELS))[LABELS[1]][:3],
        *synthetic_vocabulary(len(LABELS))[LABELS[3]][:3],
    ]
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    expected = served(input=tf.constant(pipeline.transform([words])))["probability"].numpy()[0]

    from labeler.server import create_server
    from labeler.v1 import config_pb2

    loop = BackgroundLoop()
    try:
        model_server = loop.run(ModelServer(config.model_root, ["topics"], poll_s=0.3).start())
        labeler_config = config_pb2.LabelerConfig(
            model_root=str(config.model_root), version_poll_interval_ms=200
        )
        labeler_config.bundles.add(model="topics", target=model_server.target, timeout_ms=5000)
        server = loop.run(create_server(labeler_config))
        try:
            assert loop.run(server.app.wait_ready(180))
            channel, labeler = stub(server.port)
            with channel:
                reply = labeler.Classify(labeler_pb2.ClassifyRequest(words=words, threshold=0), timeout=10)
                default = labeler.Classify(labeler_pb2.ClassifyRequest(words=words), timeout=10)
        finally:
            loop.run(server.stop(None))
            loop.run(model_server.stop())
    finally:
        loop.close()
    got = {s.label: s for s in reply.labels}
    assert set(got) == set(LABELS) and not reply.failures
    for j, label in enumerate(LABELS):
        assert got[label].probability == pytest.approx(float(expected[j]), abs=1e-6)
        assert got[label].model == "topics" and got[label].model_version == job.model_version
    # The configured threshold (0.5) cuts the same probabilities; the document's
    # strongest label is one of the two it says.
    assert {s.label for s in default.labels} == {
        label for j, label in enumerate(LABELS) if expected[j] >= 0.5
    }
    assert LABELS[int(expected.argmax())] in {LABELS[1], LABELS[3]}
