"""The Labeler against a real model server serving the four real sample models:
the old system's example through the Python stub, grpcurl and the CLI;
ClassifyBatch as one Predict per model; thresholds, label filters, ListLabels,
health, metrics and coalescing."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from labeler.v1 import config_pb2, labeler_pb2, labeler_pb2_grpc
from tests.support.labeler_support import (
    EXAMPLE,
    SAMPLE_LABELS,
    BackgroundLoop,
    ModelServer,
    health_status,
    labeler_config,
    stub,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

BIN = pathlib.Path(sys.executable).parent
GRPCURL = BIN / "grpcurl"


class Stack:
    def __init__(self, loop, model_server, port, server, trained_models):
        self.loop = loop
        self.model_server = model_server
        self.port = port
        self.server = server
        self.trained_models = trained_models

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.app.metrics_port}/metrics"


@pytest.fixture(scope="module")
def stack(trained_model_root, trained_models):
    from labeler.server import create_server

    loop = BackgroundLoop()
    model_server = loop.run(ModelServer(trained_model_root, SAMPLE_LABELS).start())
    config = labeler_config(
        trained_model_root, {m: model_server.target for m in SAMPLE_LABELS}, timeout_ms=5000
    )
    server = loop.run(create_server(config, metrics_port=0))
    port = server.port
    assert loop.run(server.app.wait_ready(60)), server.app.service.list_labels()
    yield Stack(loop, model_server, port, server, trained_models)
    loop.run(server.stop(None))
    loop.run(model_server.stop())
    loop.close()


def _keras_probability(trained_models, model: str, documents) -> np.ndarray:
    result = trained_models[model]
    return np.asarray(result.model.predict(result.pipeline.transform(documents), verbose=0)).reshape(-1)


def _metric(url: str, name: str, **labels) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


def test_example_is_movie_through_the_python_stub(stack):
    channel, labeler = stub(stack.port)
    with channel:
        reply = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=10)
    found = [s.label for s in reply.labels]
    assert "影视" in found and "美妆" not in found
    assert not reply.failures
    movie = next(s for s in reply.labels if s.label == "影视")
    assert movie.model == "movie" and movie.model_version == stack.trained_models["movie"].version
    assert movie.probability >= 0.5
    probabilities = [s.probability for s in reply.labels]
    assert probabilities == sorted(probabilities, reverse=True)
    # Same features as training: the model server's answer is the Keras model's.
    assert movie.probability == pytest.approx(
        _keras_probability(stack.trained_models, "movie", [EXAMPLE])[0], abs=1e-5
    )


def test_example_through_grpcurl_with_reflection(stack):
    address = f"127.0.0.1:{stack.port}"
    services = subprocess.run(
        [GRPCURL, "-plaintext", address, "list"], capture_output=True, text=True, timeout=30
    )
    assert services.returncode == 0, services.stderr
    assert "labeler.v1.Labeler" in services.stdout.split()
    request = json.dumps({"words": EXAMPLE}, ensure_ascii=False)
    out = subprocess.run(
        [GRPCURL, "-plaintext", "-d", request, address, "labeler.v1.Labeler/Classify"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    labels = [s["label"] for s in reply.get("labels", [])]
    assert "影视" in labels and "美妆" not in labels


def test_cli_classify_and_labels(stack):
    target = ["--target", f"127.0.0.1:{stack.port}"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    out = subprocess.run(
        [BIN / "labeler", "classify", *EXAMPLE, *target], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("影视\t") for line in lines) and not any(
        line.startswith("美妆\t") for line in lines
    )

    only = subprocess.run(
        [BIN / "labeler", "classify", *EXAMPLE, *target, "--labels", "美妆", "--threshold", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert only.returncode == 0, only.stderr
    assert [line.split("\t")[0] for line in only.stdout.splitlines()] == ["美妆"]

    bad = subprocess.run(
        [BIN / "labeler", "classify", *EXAMPLE, *target, "--threshold", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert bad.returncode == 3
    assert "INVALID_ARGUMENT" in bad.stderr and "threshold must be within [0, 1], got 2" in bad.stderr

    labels = subprocess.run(
        [BIN / "labeler", "labels", *target], capture_output=True, text=True, timeout=60, env=env
    )
    assert labels.returncode == 0, labels.stderr
    rows = [line.split("\t") for line in labels.stdout.splitlines()]
    assert [r[0] for r in rows] == list(SAMPLE_LABELS.values())
    assert all(r[3] == "AVAILABLE" for r in rows)


def test_classify_batch_is_one_predict_per_model(stack, sample_corpus):
    documents = [
        json.loads(line)["words"] for line in sample_corpus.test.read_text(encoding="utf-8").splitlines()[:40]
    ]
    before = {
        m: _metric(stack.metrics_url, "labeler_predict_batch_documents_count", model=m) for m in SAMPLE_LABELS
    }
    channel, labeler = stub(stack.port)
    with channel:
        request = labeler_pb2.ClassifyBatchRequest(
            documents=[labeler_pb2.Document(words=d) for d in documents], threshold=0
        )
        reply = labeler.ClassifyBatch(request, timeout=30)
        single = labeler.Classify(labeler_pb2.ClassifyRequest(words=documents[3], threshold=0), timeout=10)
    assert not reply.failures and len(reply.results) == len(documents)
    for model, label in SAMPLE_LABELS.items():
        # One Predict for the batch; the single Classify of one of its
        # documents is answered by the prediction cache (on by default).
        assert (
            _metric(stack.metrics_url, "labeler_predict_batch_documents_count", model=model)
            == before[model] + 1
        )
        assert _metric(stack.metrics_url, "labeler_cache_lookups_total", model=model, outcome="hit") >= 1
        expected = _keras_probability(stack.trained_models, model, documents)
        got = [next(s.probability for s in r.labels if s.label == label) for r in reply.results]
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert {s.label: s.probability for s in single.labels} == pytest.approx(
        {s.label: s.probability for s in reply.results[3].labels}, abs=1e-6
    )


def test_threshold_and_label_filter(stack):
    channel, labeler = stub(stack.port)
    with channel:
        everything = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0.0), timeout=10)
        assert sorted(s.label for s in everything.labels) == sorted(SAMPLE_LABELS.values())
        nothing = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=1.0), timeout=10)
        assert all(s.probability >= 1.0 for s in nothing.labels)
        two = labeler.Classify(
            labeler_pb2.ClassifyRequest(words=EXAMPLE, labels=["美妆", "明星", "美妆"], threshold=0),
            timeout=10,
        )
        assert sorted(s.label for s in two.labels) == ["明星", "美妆"]


def test_list_labels_health_and_metrics(stack):
    assert health_status(stack.port) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(stack.port, "") == health_pb2.HealthCheckResponse.SERVING
    channel, labeler = stub(stack.port)
    with channel:
        infos = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=10).labels
        with pytest.raises(grpc.RpcError):
            labeler.Classify(labeler_pb2.ClassifyRequest(words=[]), timeout=10)
    assert [(i.label, i.model, i.target, i.model_version, i.state, i.threshold) for i in infos] == [
        (
            label,
            model,
            stack.model_server.target,
            stack.trained_models[model].version,
            labeler_pb2.LABEL_STATE_AVAILABLE,
            0.5,
        )
        for model, label in SAMPLE_LABELS.items()
    ]
    assert (
        _metric(stack.metrics_url, "labeler_rpc_requests_total", method="Classify", code="INVALID_ARGUMENT")
        >= 1
    )
    assert _metric(stack.metrics_url, "labeler_rpc_requests_total", method="ListLabels", code="OK") >= 1
    assert _metric(stack.metrics_url, "labeler_predict_latency_seconds_count", model="movie") >= 1
    assert (
        _metric(stack.metrics_url, "labeler_label_model_version", label="影视", model="movie")
        == stack.trained_models["movie"].version
    )


def test_coalescing_merges_concurrent_classify_calls(stack, trained_model_root, coalescing=True):
    """With coalescing on, concurrent Classify calls share batched Predicts and
    each still gets exactly its own answer. The documents are all distinct and
    the prediction cache is off, so only coalescing can save a Predict (with
    coalescing off this test fails: 24 Predicts for 24 calls)."""
    from labeler.server import create_server

    config = labeler_config(trained_model_root, {"movie": stack.model_server.target}, timeout_ms=5000)
    # A wide window so the concurrent calls below surely meet in one batch.
    config.coalescing.CopyFrom(
        config_pb2.CoalescingConfig(enabled=coalescing, max_delay_us=200_000, max_batch_documents=64)
    )
    config.prediction_cache.disabled = True
    documents = [EXAMPLE[: i % 6 + 1] + ["口红"] * (i % 3) + [f"w{i}"] * (i // 6) for i in range(24)]
    assert len({tuple(d) for d in documents}) == len(documents)

    async def scenario():
        server = await create_server(config, metrics_port=0)
        port = server.port
        try:
            assert await server.app.wait_ready(60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                labeler = labeler_pb2_grpc.LabelerStub(channel)
                replies = await asyncio.gather(
                    *(
                        labeler.Classify(labeler_pb2.ClassifyRequest(words=d, threshold=0), timeout=30)
                        for d in documents
                    )
                )
            predicts = _metric(
                f"http://127.0.0.1:{server.app.metrics_port}/metrics",
                "labeler_predict_batch_documents_count",
                model="movie",
            )
            rows = _metric(
                f"http://127.0.0.1:{server.app.metrics_port}/metrics",
                "labeler_predict_batch_documents_sum",
                model="movie",
            )
            return replies, predicts, rows
        finally:
            await server.stop(None)

    replies, predicts, rows = stack.loop.run(scenario())
    expected = _keras_probability(stack.trained_models, "movie", documents)
    np.testing.assert_allclose([r.labels[0].probability for r in replies], expected, atol=1e-5)
    assert rows == len(documents)  # every document asked once: nothing was answered from a cache
    assert 1 <= predicts < len(documents)


def test_coalescing_never_holds_a_lone_call_for_the_window(stack, trained_model_root):
    """Coalescing is adaptive: with no Predict in flight a call goes out at once,
    so even a window far longer than the caller's deadline costs it nothing."""
    from labeler.server import create_server

    config = labeler_config(trained_model_root, {"movie": stack.model_server.target}, timeout_ms=5000)
    # A 60 s window: a call that waited for it would miss its 10 s deadline.
    config.coalescing.CopyFrom(
        config_pb2.CoalescingConfig(enabled=True, max_delay_us=60_000_000, max_batch_documents=64)
    )

    async def scenario():
        server = await create_server(config, metrics_port=0)
        port = server.port
        try:
            assert await server.app.wait_ready(60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                labeler = labeler_pb2_grpc.LabelerStub(channel)
                return [
                    await labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=10)
                    for _ in range(3)
                ]
        finally:
            await server.stop(None)

    replies = stack.loop.run(scenario())
    assert [[s.label for s in r.labels] for r in replies] == [["影视"]] * 3
    assert all(not r.failures for r in replies)
