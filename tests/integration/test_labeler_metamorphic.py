"""The request path's metamorphic property, through a real Labeler and a real
labeler-modelserver serving two versions of each model (issue 24):

for a random configuration (binary labels and a bundle; canaries and shadows
at random shares; the prediction cache on or off; coalescing on or off;
versions pinned or following the latest) and a random batch of documents
(known words, unknown words, documents empty after filtering, duplicates),

- every document's answer in one ClassifyBatch equals the answer of a single
  Classify of that document: the same labels, the same model versions (so
  the same arm), the same probabilities to float32 rounding (see ``_same``);
- each document's version is the arm its canary's sticky hash sends it to
  (the candidate's version on the canary arm, the served one otherwise);
- ``labeler_label_results_total{arm}`` counts the batch's documents per arm;
- the same calls sent all at once (batches and single calls together) change
  no answer.

The models are trained once per module and one model server serves every
example; each example starts its own Labeler (a few hundred ms).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import shutil

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeler.config import validate
from labeler.rollout import routes_to_canary
from labeler.v1 import config_pb2, labeler_pb2, labeler_pb2_grpc
from tests.support.labeler_support import BackgroundLoop

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

BINARY = {"movie": "影视", "beauty": "美妆"}
BUNDLE = "topics"
MAX_EXAMPLES = 16


@dataclasses.dataclass(frozen=True)
class Stack:
    loop: BackgroundLoop
    target: str
    root: object
    versions: dict[str, tuple[int, int]]  # model -> (older, newer)
    known_words: tuple[str, ...]


@pytest.fixture(scope="module")
def stack(trained_models, trained_model_root, sample_corpus, tmp_path_factory):
    """movie: v1 and a retrained v2 (other answers); beauty: v1 and v2 (the same
    weights re-exported: other version, same answers); a bundle of six
    synthetic labels in two versions. One model server serves them all."""
    from modelserver.server import ModelServerOptions, create_server
    from tests.conftest import train_small
    from tests.integration.test_labeler_bundles import _train_bundle
    from tfserving.protos import model_server_config_pb2
    from trainer.corpus import synthetic_labels, write_many_label_corpus
    from trainer.recipes.export import export_version

    root = tmp_path_factory.mktemp("metamorphic") / "models"
    root.mkdir()
    versions: dict[str, tuple[int, int]] = {}
    for model, label in BINARY.items():
        shutil.copytree(trained_model_root / model, root / model)
        v1 = trained_models[model].version
        if model == "movie":
            retrained = train_small(sample_corpus, tmp_path_factory.mktemp("retrain"), model, seed=7)
            v2, _ = export_version(retrained.model, retrained.pipeline, root, model, label)
        else:
            v2, _ = export_version(
                trained_models[model].model, trained_models[model].pipeline, root, model, label
            )
        versions[model] = (v1, v2)
    corpus = tmp_path_factory.mktemp("topics-corpus")
    train, test = write_many_label_corpus(corpus, 6, docs_per_label=40, seed=1)
    topics = _train_bundle(
        train,
        test,
        root,
        BUNDLE,
        synthetic_labels(6),
        {"epochs": 10, "batch_size": 16, "embedding_dim": 8},
        0.05,
    )
    b1 = topics.version
    shutil.copytree(root / BUNDLE / str(b1), root / BUNDLE / str(b1 + 1))
    versions[BUNDLE] = (b1, b1 + 1)

    config = model_server_config_pb2.ModelServerConfig()
    for model in (*BINARY, BUNDLE):
        entry = config.model_config_list.config.add(
            name=model, base_path=str(root / model), model_platform="tensorflow"
        )
        entry.model_version_policy.all.SetInParent()
    loop = BackgroundLoop()
    options = ModelServerOptions(
        model_config=config, port=0, intra_op_parallelism=1, inter_op_parallelism=1, request_threads=2
    )
    server = loop.run(create_server(options))
    known = sorted(set(trained_models["movie"].pipeline.vocabulary[1:80]))
    known += sorted(set(topics.pipeline.vocabulary[1:40]))
    yield Stack(loop, f"127.0.0.1:{server.port}", root, versions, tuple(w for w in known if w))
    manager = server.app
    loop.run(server.stop(None))
    loop.run(manager.close())
    loop.close()


# -- the random configuration --------------------------------------------------------

PERCENTS = st.one_of(
    st.sampled_from([0.0, 20.0, 50.0, 100.0]), st.floats(0.0, 100.0).map(lambda p: round(p, 2))
)


@st.composite
def label_choices(draw):
    return {
        "pin": draw(st.sampled_from(["older", "newer", "following"])),
        "canary": draw(st.none() | PERCENTS),
        "shadow": draw(st.none() | PERCENTS),
    }


@st.composite
def configs(draw):
    return {
        "labels": {model: draw(label_choices()) for model in BINARY},
        "bundle": draw(st.sampled_from([None, "older", "newer", "following"])),
        "cache": draw(st.booleans()),
        "coalescing": draw(st.booleans()),
    }


@st.composite
def batches(draw, known_words: tuple[str, ...]):
    known = st.sampled_from(known_words)
    unknown = st.integers(0, 10**6).map(lambda i: f"zz{i}")
    document = st.one_of(
        st.lists(known, min_size=1, max_size=12),  # known words
        st.lists(st.one_of(known, unknown), min_size=1, max_size=12),  # known and unknown
        st.lists(unknown, min_size=1, max_size=4),  # empty after filtering
    )
    documents = draw(st.lists(document, min_size=1, max_size=10))
    if draw(st.booleans()):  # duplicates
        documents += draw(st.lists(st.sampled_from(documents), min_size=1, max_size=4))
        documents = draw(st.permutations(documents))
    return documents


def _labeler_config(stack: Stack, choice: dict) -> config_pb2.LabelerConfig:
    config = config_pb2.LabelerConfig(model_root=str(stack.root), version_poll_interval_ms=200)
    for model, label in BINARY.items():
        c = choice["labels"][model]
        older, newer = stack.versions[model]
        entry = config.labels.add(label=label, model=model, target=stack.target, timeout_ms=10000)
        served = {"older": older, "newer": newer, "following": newer}[c["pin"]]
        if c["pin"] != "following":
            entry.version = served
        other = older if served == newer else newer
        if c["canary"] is not None:
            config.canaries.add(label=label, version=other, percent=c["canary"])
        if c["shadow"] is not None:
            config.shadows.add(label=label, version=other, sample_percent=c["shadow"], max_in_flight=64)
    if choice["bundle"] is not None:
        entry = config.bundles.add(model=BUNDLE, target=stack.target, timeout_ms=10000)
        if choice["bundle"] != "following":
            entry.version = stack.versions[BUNDLE][0 if choice["bundle"] == "older" else 1]
    config.prediction_cache.disabled = not choice["cache"]
    config.coalescing.CopyFrom(
        config_pb2.CoalescingConfig(enabled=choice["coalescing"], max_delay_us=2000, max_batch_documents=64)
    )
    return config


def _expected_versions(stack: Stack, choice: dict, words) -> dict[str, tuple[int, str]]:
    """The (version, arm) each binary label must answer ``words`` with: the
    canary's candidate on the canary arm, the served version otherwise."""
    out = {}
    for model, label in BINARY.items():
        c = choice["labels"][model]
        older, newer = stack.versions[model]
        served = older if c["pin"] == "older" else newer
        other = older if served == newer else newer
        canary = c["canary"] is not None and c["canary"] > 0 and routes_to_canary(label, words, c["canary"])
        out[label] = (other, "canary") if canary else (served, "served")
    return out


def _answer(result) -> list[tuple[str, float, str, int]]:
    return sorted((s.label, s.probability, s.model, s.model_version) for s in result.labels)


def _same(got, want) -> bool:
    """Same labels, models and versions; the same probabilities to float32
    rounding. The model server's TensorFlow kernels (oneDNN) round the last
    bit differently for different batch sizes (0.053866744 alone, 0.053866740
    beside a second row), which no Labeler can change; a wrong row or arm is
    off by far more."""
    return len(got) == len(want) and all(
        (g[0], g[2], g[3]) == (w[0], w[2], w[3]) and math.isclose(g[1], w[1], rel_tol=1e-6, abs_tol=1e-7)
        for g, w in zip(got, want, strict=True)
    )


def _arm_counts(app) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for metric in app.metrics.registry.collect():
        if metric.name != "labeler_label_results":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["label"], sample.labels["arm"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


async def _example(stack: Stack, choice: dict, documents) -> None:
    from labeler.server import create_server

    server = await create_server(validate(_labeler_config(stack, choice)))
    try:
        assert await server.app.wait_ready(60)
        assert await server.app.rollouts.wait_ready(60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            labeler = labeler_pb2_grpc.LabelerStub(channel)
            batch_request = labeler_pb2.ClassifyBatchRequest(
                documents=[labeler_pb2.Document(words=d) for d in documents], threshold=0
            )

            def single(words):
                return labeler.Classify(labeler_pb2.ClassifyRequest(words=words, threshold=0), timeout=30)

            before = _arm_counts(server.app)
            batch = await labeler.ClassifyBatch(batch_request, timeout=30)
            after = _arm_counts(server.app)
            assert not batch.failures, batch.failures
            singles = [await single(d) for d in documents]

            # 1. ClassifyBatch == Classify, document by document, and the arm is the canary's choice.
            expected_arms: dict[tuple[str, str], int] = {}
            for words, got, alone in zip(documents, batch.results, singles, strict=True):
                assert not alone.failures, (words, alone.failures)
                assert _same(_answer(got), _answer(alone)), (words, _answer(got), _answer(alone), choice)
                versions = {s.label: s.model_version for s in got.labels}
                for label, (version, arm) in _expected_versions(stack, choice, words).items():
                    assert versions[label] == version, (label, words, choice)
                    expected_arms[(label, arm)] = expected_arms.get((label, arm), 0) + 1
            # 2. Per-document arm accounting of the batch.
            for label in BINARY.values():
                for arm in ("served", "canary"):
                    n = after.get((label, arm), 0) - before.get((label, arm), 0)
                    assert n == expected_arms.get((label, arm), 0), (label, arm, choice)

            # 3. All at once: the same answers.
            together = await asyncio.gather(
                labeler.ClassifyBatch(batch_request, timeout=30),
                *(single(d) for d in documents),
                labeler.ClassifyBatch(batch_request, timeout=30),
            )
            first, *alone_again, last = together
            for i, words in enumerate(documents):
                want = _answer(singles[i])
                assert _same(_answer(first.results[i]), want), ("concurrent batch", words, choice)
                assert _same(_answer(alone_again[i]), want), ("concurrent single", words, choice)
                assert _same(_answer(last.results[i]), want), ("concurrent batch", words, choice)
        await server.app.rollouts.drain_shadows()
    finally:
        await server.stop(None)


def test_classify_batch_answers_each_document_as_classify_does(stack):
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(choice=configs(), documents=batches(stack.known_words))
    def check(choice, documents):
        stack.loop.run(_example(stack, choice, documents), timeout=300)

    check()
