"""Multi-label models (bundles) served: one Predict per bundle per request,
columns read from the version that answered, binary and bundle models in one
config, and the bad configurations named rather than answered wrongly.

Real parts: bundles trained by the fastText recipe on small corpora, served by
an in-process labeler-modelserver, asked through the Labeler's gRPC API.
"""

from __future__ import annotations

import asyncio
import io
import shutil

import grpc
import numpy as np
import pytest

from labeler import config as labeler_config_mod
from labeler.v1 import config_pb2, labeler_pb2, labeler_pb2_grpc
from modelspec.features import FeaturePipeline
from tests.support.labeler_support import (
    EXAMPLE,
    BackgroundLoop,
    ModelServer,
    labeler_config,
    stub,
    wait_until,
)
from trainer.corpus import SAMPLE_MODELS, synthetic_labels, synthetic_vocabulary, write_many_label_corpus

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

# The four sample labels in a column order unlike SAMPLE_MODELS'.
SAMPLE_BUNDLE = "samples"
SAMPLE_BUNDLE_LABELS = ["时尚", "影视", "明星", "美妆"]
TOPICS = "topics"
TOPIC_LABELS = synthetic_labels(6)


def _train_bundle(train, test, root, model: str, labels, params, learning_rate=0.01):
    from trainer.recipes.fasttext import TrainConfig
    from trainer.recipes.fasttext import train as run

    cfg = TrainConfig(
        model=model,
        label="",
        labels=labels,
        corpus=train,
        test_corpus=test,
        model_root=root,
        params=params,
        seed=0,
        learning_rate=learning_rate,
    )
    return run(cfg, out=io.StringIO())


@pytest.fixture(scope="module")
def bundles(sample_corpus, tmp_path_factory):
    from tests.conftest import FIXTURE_LEARNING_RATE, FIXTURE_PARAMS

    root = tmp_path_factory.mktemp("bundles")
    samples = _train_bundle(
        sample_corpus.train,
        sample_corpus.test,
        root,
        SAMPLE_BUNDLE,
        SAMPLE_BUNDLE_LABELS,
        FIXTURE_PARAMS,
        FIXTURE_LEARNING_RATE,
    )
    corpus = tmp_path_factory.mktemp("many")
    train, test = write_many_label_corpus(corpus, len(TOPIC_LABELS), docs_per_label=80, seed=1)
    topics = _train_bundle(
        train, test, root, TOPICS, TOPIC_LABELS, {"epochs": 30, "batch_size": 16, "embedding_dim": 16}, 0.05
    )
    return {SAMPLE_BUNDLE: samples, TOPICS: topics}


@pytest.fixture
def model_root(bundles, trained_model_root, tmp_path):
    """The four binary sample models and both bundles, one root."""
    root = tmp_path / "models"
    shutil.copytree(trained_model_root, root)
    for result in bundles.values():
        shutil.copytree(result.version_dir.parent, root / result.version_dir.parent.name)
    return root


@pytest.fixture
def loop():
    background = BackgroundLoop()
    yield background
    background.close()


@pytest.fixture
def model_server(loop, model_root):
    server = loop.run(ModelServer(model_root, [*SAMPLE_MODELS, SAMPLE_BUNDLE, TOPICS], poll_s=0.3).start())
    yield server
    loop.run(server.stop())


class CountingPredictor:
    """Counts the Predicts a request makes per model (wraps the real one)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def predict(self, binding, features, deadline):
        self.calls.append(binding.spec.model)
        return await self.inner.predict(binding, features, deadline)


def _config(model_root, target: str, binary=(), bundles=(), **bundle_fields) -> config_pb2.LabelerConfig:
    config = labeler_config(model_root, {m: target for m in binary}, timeout_ms=5000)
    for model in bundles:
        config.bundles.add(model=model, target=target, timeout_ms=5000, **bundle_fields.get(model, {}))
    return config


def _start(loop, config):
    from labeler.server import create_server

    server = loop.run(create_server(config))
    return server


def _expected(result, words) -> dict[str, float]:
    """What the exported model computes for ``words``, by label."""
    import tensorflow as tf

    pipeline, meta = FeaturePipeline.load(result.version_dir)
    served = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    row = served(input=tf.constant(pipeline.transform([words])))["probability"].numpy()[0]
    return dict(zip(meta["labels"], row.tolist(), strict=True))


def test_a_bundle_of_the_four_sample_labels_answers_the_old_example_with_one_predict(
    loop, model_server, model_root, bundles
):
    server = _start(loop, _config(model_root, model_server.target, bundles=[SAMPLE_BUNDLE]))
    try:
        assert loop.run(server.app.wait_ready(180))
        counting = CountingPredictor(server.app.service._predictor)
        server.app.service.use_predictor(counting)
        channel, labeler = stub(server.port)
        with channel:
            reply = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=10)
            everything = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0), timeout=10)
            infos = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
    finally:
        loop.run(server.stop(None))
    found = [s.label for s in reply.labels]
    assert "影视" in found and "美妆" not in found, found
    assert counting.calls == [SAMPLE_BUNDLE, SAMPLE_BUNDLE]  # one Predict per request for four labels
    expected = _expected(bundles[SAMPLE_BUNDLE], EXAMPLE)
    got = {s.label: s.probability for s in everything.labels}
    assert set(got) == set(SAMPLE_BUNDLE_LABELS)
    for label, p in expected.items():
        assert got[label] == pytest.approx(p, abs=1e-6)
    version = bundles[SAMPLE_BUNDLE].version
    assert {(i.label, i.model, i.model_version, i.column) for i in infos} == {
        (label, SAMPLE_BUNDLE, version, j) for j, label in enumerate(SAMPLE_BUNDLE_LABELS)
    }


def test_binary_models_and_a_bundle_in_one_config(loop, model_server, model_root, bundles):
    topic = TOPIC_LABELS[2]
    config = _config(
        model_root,
        model_server.target,
        binary=["movie", "beauty"],
        bundles=[TOPICS],
        topics={"threshold": 0.4, "label_thresholds": {topic: 0.9}},
    )
    server = _start(loop, config)
    words = [*synthetic_vocabulary(len(TOPIC_LABELS))[topic][:4], "的", "我们"]
    try:
        assert loop.run(server.app.wait_ready(180))
        channel, labeler = stub(server.port)
        with channel:
            movie = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=10)
            about_topic = labeler.Classify(labeler_pb2.ClassifyRequest(words=words, threshold=0), timeout=10)
            some = labeler.Classify(
                labeler_pb2.ClassifyRequest(words=words, labels=[topic, "美妆"], threshold=0), timeout=10
            )
            infos = {
                i.label: i for i in labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
            }
            with pytest.raises(grpc.RpcError) as err:
                labeler.Classify(labeler_pb2.ClassifyRequest(words=words, labels=["没有"]), timeout=10)
    finally:
        loop.run(server.stop(None))
    assert "影视" in [s.label for s in movie.labels] and "美妆" not in [s.label for s in movie.labels]
    scores = {s.label: s for s in about_topic.labels}
    assert set(scores) == {"影视", "美妆", *TOPIC_LABELS} and not about_topic.failures
    assert scores[topic].model == TOPICS and max(scores.values(), key=lambda s: s.probability).label == topic
    expected = _expected(bundles[TOPICS], words)
    for label in TOPIC_LABELS:
        assert scores[label].probability == pytest.approx(expected[label], abs=1e-6)
    assert {s.label for s in some.labels} == {topic, "美妆"}
    assert not infos["影视"].HasField("column") and infos["影视"].model == "movie"
    assert infos[topic].HasField("column") and infos[topic].threshold == pytest.approx(0.9)
    assert infos[TOPIC_LABELS[0]].threshold == pytest.approx(0.4)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _version_with_columns(result, model_root, keep: list[str]) -> int:
    """The same bundle exported with only the columns ``keep``, in that order:
    every kept label's probability is unchanged, only its column moves."""
    import keras

    from trainer.recipes.export import export_version

    _, meta = FeaturePipeline.load(result.version_dir)
    columns = [meta["labels"].index(label) for label in keep]
    source = result.model
    inputs = keras.Input(shape=source.input_shape[1:], dtype="int32", name="input")
    outputs = keras.ops.take(source(inputs), columns, axis=1)  # the kept columns, in their new order
    version, _ = export_version(
        keras.Model(inputs, outputs), result.pipeline, model_root, SAMPLE_BUNDLE, "", labels=keep
    )
    return version


class Traffic:
    def __init__(self, port: int, workers: int = 3) -> None:
        self.port = port
        self.workers = workers
        self.replies: list[labeler_pb2.ClassifyResponse] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            labeler = labeler_pb2_grpc.LabelerStub(channel)

            async def worker() -> None:
                while not self._stop.is_set():
                    try:
                        request = labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0)
                        self.replies.append(await labeler.Classify(request, timeout=10))
                    except grpc.aio.AioRpcError as exc:
                        self.errors.append(f"{exc.code().name}: {exc.details()}")
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(worker() for _ in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()


def test_columns_remapped_across_a_retrained_version_under_load(loop, model_server, model_root, bundles):
    result = bundles[SAMPLE_BUNDLE]
    expected = _expected(result, EXAMPLE)
    server = _start(loop, _config(model_root, model_server.target, bundles=[SAMPLE_BUNDLE]))
    try:
        assert loop.run(server.app.wait_ready(180))
        traffic = Traffic(server.port)
        running = asyncio.run_coroutine_threadsafe(traffic.run(), loop.loop)
        wait_until(lambda: len(traffic.replies) >= 10, 60, what="traffic")
        order = SAMPLE_BUNDLE_LABELS[::-1]
        new_version = _version_with_columns(result, model_root, order)
        channel, labeler = stub(server.port)
        with channel:

            def switched():
                infos = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
                return all(i.model_version == new_version for i in infos)

            wait_until(switched, 120, what="the new version")
            seen = len(traffic.replies)
            wait_until(lambda: len(traffic.replies) >= seen + 10, 60, what="traffic on the new version")
            infos = {
                i.label: i.column
                for i in labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
            }
        traffic.stop()
        running.result(30)
    finally:
        loop.run(server.stop(None))
    assert infos == {label: j for j, label in enumerate(order)}
    assert traffic.errors == []
    assert [list(r.failures) for r in traffic.replies if r.failures] == []
    versions = [r.labels[0].model_version for r in traffic.replies]
    assert versions[0] == result.version and versions[-1] == new_version
    for reply in traffic.replies:
        got = {s.label: s.probability for s in reply.labels}
        assert set(got) == set(expected)
        for label, p in expected.items():
            assert got[label] == pytest.approx(p, abs=1e-5), (reply.labels[0].model_version, label)


def test_a_new_version_that_drops_a_bound_label_is_not_switched_to(loop, model_server, model_root, bundles):
    result = bundles[SAMPLE_BUNDLE]
    server = _start(loop, _config(model_root, model_server.target, bundles=[SAMPLE_BUNDLE]))
    try:
        assert loop.run(server.app.wait_ready(180))
        dropped = _version_with_columns(result, model_root, ["影视", "美妆", "明星"])
        channel, labeler = stub(server.port)
        with channel:

            def refused():
                infos = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
                return [i for i in infos if "drops label" in i.message]

            infos = wait_until(refused, 120, what="the refusal")
            # The model server serves only its latest version, which the Labeler
            # refuses: every label of the bundle fails by name, none is answered
            # from the wrong column.
            with pytest.raises(grpc.RpcError) as err:
                labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0), timeout=10)
    finally:
        loop.run(server.stop(None))
    assert f"version {dropped} drops label(s) 时尚" in infos[0].message
    assert infos[0].model_version == result.version
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert all(f"{label} (samples)" in err.value.details() for label in SAMPLE_BUNDLE_LABELS)


def test_a_label_bound_twice_is_a_named_failure_and_the_rest_answer(loop, model_server, model_root):
    config = _config(model_root, model_server.target, binary=["movie"], bundles=[SAMPLE_BUNDLE])
    server = _start(loop, config)
    try:
        assert loop.run(server.app.wait_ready(180))
        channel, labeler = stub(server.port)
        with channel:
            reply = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0), timeout=10)
            with pytest.raises(grpc.RpcError) as err:
                labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, labels=["影视"]), timeout=10)
            infos = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
    finally:
        loop.run(server.stop(None))
    twice = [i for i in infos if i.label == "影视"]
    assert {i.model for i in twice} == {"movie", SAMPLE_BUNDLE}
    assert all(i.state == labeler_pb2.LABEL_STATE_UNAVAILABLE and "bound twice" in i.message for i in twice)
    assert {s.label for s in reply.labels} == {"美妆", "明星", "时尚"}
    assert [(f.label, f.code_name) for f in reply.failures] == [("影视", "FAILED_PRECONDITION")]
    assert "bound twice" in reply.failures[0].message and "movie" in reply.failures[0].message
    # Only the label bound twice asked for: nothing could be scored, and why is named.
    assert (
        err.value.code() == grpc.StatusCode.UNAVAILABLE and "label 影视 is bound twice" in err.value.details()
    )


def test_a_bundle_whose_config_names_an_unknown_label_never_answers_wrongly(loop, model_server, model_root):
    message = "does not carry"
    config = _config(
        model_root,
        model_server.target,
        bundles=[SAMPLE_BUNDLE],
        samples={"label_thresholds": {"不存在": 0.5}},
    )
    server = _start(loop, config)
    try:
        channel, labeler = stub(server.port)
        with channel:

            def said():
                infos = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
                return [i for i in infos if message in i.message]

            infos = wait_until(said, 60, what="the bundle's error")
            with pytest.raises(grpc.RpcError) as err:
                labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=10)
            with pytest.raises(grpc.RpcError) as named:
                labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, labels=["影视"]), timeout=10)
    finally:
        loop.run(server.stop(None))
    assert named.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bundle samples has no version loaded yet" in named.value.details()
    assert "不存在" in infos[0].message and infos[0].state != labeler_pb2.LABEL_STATE_AVAILABLE
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "samples" in err.value.details()


def test_a_binary_model_under_bundles_and_a_bundle_under_labels_are_refused(loop, model_server, model_root):
    config = _config(model_root, model_server.target, bundles=["movie"])
    config.labels.add(label="杂项", model=SAMPLE_BUNDLE, target=model_server.target)
    server = _start(loop, config)
    try:
        channel, labeler = stub(server.port)
        with channel:

            def both():
                infos = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
                messages = {i.model: i.message for i in infos}
                return messages if all("cannot switch" in m for m in messages.values()) else None

            messages = wait_until(both, 60, what="both errors")
    finally:
        loop.run(server.stop(None))
    assert "bind it under labels instead" in messages["movie"]
    assert "bind it under bundles" in messages[SAMPLE_BUNDLE]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.bundles.add(model="movie"), "also bound by labels[0]"),
        (lambda c: (c.bundles.add(model="topics"), c.bundles.add(model="topics")), "duplicate bundle"),
        (lambda c: c.bundles.add(model="topics", threshold=1.5), "threshold must be within [0, 1]"),
        (lambda c: c.bundles.add(model="topics", label_thresholds={"影视": 0.3}), "bound twice"),
        (lambda c: c.bundles.add(model="topics", label_thresholds={"x": -1}), "label_thresholds['x']"),
        (lambda c: c.bundles.add(model="Bad Name"), "is not allowed"),
    ],
)
def test_bad_bundle_configs_are_named(mutate, message):
    config = config_pb2.LabelerConfig()
    config.labels.add(label="影视", model="movie")
    mutate(config)
    with pytest.raises(labeler_config_mod.ConfigError) as err:
        labeler_config_mod.validate(config)
    assert message in str(err.value) and "bundles[" in str(err.value)


def test_a_config_of_bundles_only_is_valid():
    config = config_pb2.LabelerConfig()
    config.bundles.add(model="topics", label_thresholds={"a": 0.7})
    settings = labeler_config_mod.validate(config)
    assert settings.labels == () and settings.bundles[0].threshold_of("a") == pytest.approx(0.7)
    assert np.isclose(settings.bundles[0].threshold_of("b"), 0.5)


def test_coalesced_calls_to_a_bundle_read_each_callers_rows(
    loop, model_server, model_root, bundles, coalescing=True
):
    """Concurrent Classify calls of distinct documents, cache off: coalesced
    into fewer Predicts than calls (with coalescing off this test fails: one
    Predict per call), each caller reading its own rows."""
    config = _config(model_root, model_server.target, bundles=[SAMPLE_BUNDLE])
    config.coalescing.enabled = coalescing
    config.coalescing.max_delay_us = 200_000  # wide: the calls below surely meet
    config.prediction_cache.disabled = True
    base = [EXAMPLE, ["口红", "色号", "显白"], ["微博", "粉丝", "应援"], ["搭配", "流行"]]
    documents = [words + [f"w{i}"] * (i // 4) for i, words in enumerate(base * 4)]
    assert len({tuple(d) for d in documents}) == len(documents)
    server = _start(loop, config)
    try:
        assert loop.run(server.app.wait_ready(180))
        counting = CountingPredictor(server.app.service._predictor)
        server.app.service.use_predictor(counting)
        channel, labeler = stub(server.port)
        with channel:
            futures = [
                labeler.Classify.future(labeler_pb2.ClassifyRequest(words=words, threshold=0), timeout=10)
                for words in documents
            ]
            replies = [f.result() for f in futures]
        predicts = server.app.metrics.registry.get_sample_value(
            "labeler_predict_batch_documents_count", {"model": SAMPLE_BUNDLE}
        )
    finally:
        loop.run(server.stop(None))
    assert counting.calls == [SAMPLE_BUNDLE] * len(documents)  # each call asked the bundle once
    assert 1 <= predicts < len(documents), predicts  # the model server saw fewer Predicts
    for words, reply in zip(documents, replies, strict=True):
        expected = _expected(bundles[SAMPLE_BUNDLE], words)
        got = {s.label: s.probability for s in reply.labels}
        assert set(got) == set(expected) and not reply.failures
        for label, p in expected.items():
            assert got[label] == pytest.approx(p, abs=1e-6), (words, label)
