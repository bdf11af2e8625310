"""The whole path: the Trainer trains the four sample models (real fastText
recipe, gated on the real machine's load, as separate processes), exports
them; labeler-modelserver serves them and the Labeler answers with them."""

from __future__ import annotations

import shutil

import pytest

from labeler.v1 import labeler_pb2
from tests.integration.test_no_evidence import GENERAL_TEXTS, ISSUE_ROWS, UNKNOWN_TEXTS
from tests.support.labeler_support import (
    EXAMPLE,
    SAMPLE_LABELS,
    BackgroundLoop,
    health_status,
    labeler_config,
    stub,
    wait_until,
)
from tests.support.modelserver_process import ModelServerProcess
from tests.support.trainer_support import make_config, running_trainer
from trainer.config import DEFAULT_CORPUS
from trainer.gate import GatePolicy
from trainer.recipes import RECIPES
from trainer.v1 import trainer_pb2

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]
S = trainer_pb2
# Issue 14 through models the real Trainer trained at these short settings: the
# issue's rows, the 36 hand-written everyday texts of other topics and the
# unknown-word texts get no label. With the padding row held at zero and a
# fixed prior logit this holds by construction for text without a known word,
# and was measured to hold at several seeds for the rest (docs/model-quality.md).
NO_EVIDENCE = ISSUE_ROWS + GENERAL_TEXTS + UNKNOWN_TEXTS
# Small, like the shared fixtures: a 2-core machine shared with other test runs.
HYPERPARAMETERS = S.Hyperparameters(epochs=10, batch_size=16, embedding_dim=16, threads=1)


def test_trainer_models_are_served_and_answer_through_the_labeler(tmp_path, sample_corpus):
    # A real gate on the real machine. CPU never kills (the machine is shared:
    # others' load must not fail this test); memory danger still would.
    gate = GatePolicy(
        cpu_normal=90, cpu_danger=101, memory_normal=90, memory_danger=95, warmup_s=1, window_s=1
    )
    config = make_config(
        tmp_path,
        gate=gate,
        sample_interval_s=0.25,
        registry=dict(RECIPES),
        default_recipe="fasttext",
        default_corpus=DEFAULT_CORPUS,
    )
    (config.data_root / "sample").mkdir()
    shutil.copy(sample_corpus.train, config.data_root / DEFAULT_CORPUS)

    with running_trainer(config) as trainer:
        jobs = {
            m: trainer.start(m, label, hyperparameters=HYPERPARAMETERS) for m, label in SAMPLE_LABELS.items()
        }
        done = {m: trainer.wait(j.job_id, timeout=600) for m, j in jobs.items()}
    for model, job in done.items():
        assert job.state == S.JOB_STATE_SUCCEEDED, f"{model}: {job.reason}"
        assert job.gate.action == S.GATE_ACTION_ADMIT
        assert job.progress.epoch >= 1 and job.progress.f1 > 0
        assert (config.model_root / model / str(job.model_version) / "saved_model.pb").is_file()

    models_config = tmp_path / "models.config"
    models_config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{m}" base_path: "{config.model_root / m}" model_platform: "tensorflow" }}\n'
            for m in SAMPLE_LABELS
        )
        + "}\n"
    )
    args = [
        "--port=0",
        f"--model_config_file={models_config}",
        "--file_system_poll_wait_seconds=1",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
    ]
    with ModelServerProcess(args) as modelserver:
        target = f"127.0.0.1:{modelserver.port}"
        loop = BackgroundLoop()
        try:
            from labeler.server import create_server

            labeler_conf = labeler_config(
                config.model_root, {m: target for m in SAMPLE_LABELS}, timeout_ms=5000
            )
            server = loop.run(create_server(labeler_conf))
            port = server.port
            try:
                wait_until(
                    lambda: health_status(port) == 1, timeout=120, what="the Labeler to load every model"
                )
                channel, labeler = stub(port)
                with channel:
                    reply = labeler.Classify(
                        labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0.0), timeout=30
                    )
                    # The default threshold (0.5): no threshold in the request.
                    no_evidence = labeler.ClassifyBatch(
                        labeler_pb2.ClassifyBatchRequest(
                            documents=[labeler_pb2.Document(words=w) for w in NO_EVIDENCE]
                        ),
                        timeout=60,
                    )
                    example_default = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=30)
            finally:
                loop.run(server.stop(2))
        finally:
            loop.close()
    assert not reply.failures
    scores = {s.label: s for s in reply.labels}
    assert set(scores) == set(SAMPLE_LABELS.values())
    for model, label in SAMPLE_LABELS.items():
        assert scores[label].model == model and scores[label].model_version == done[model].model_version
    # The example sentence is about a film: the movie model ranks its label first.
    best = max(scores.values(), key=lambda s: s.probability)
    assert best.label == "影视", {label: round(s.probability, 3) for label, s in scores.items()}
    assert scores["影视"].probability >= 0.5 > scores["美妆"].probability
    assert not example_default.failures
    assert {s.label for s in example_default.labels} >= {"影视"}
    assert "美妆" not in {s.label for s in example_default.labels}

    assert not no_evidence.failures, no_evidence.failures
    labeled = {
        " ".join(words): {s.label: round(s.probability, 3) for s in result.labels}
        for words, result in zip(NO_EVIDENCE, no_evidence.results, strict=True)
        if result.labels
    }
    assert not labeled, labeled
