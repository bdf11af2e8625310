"""Multi-label models (bundles) in training: the synthetic many-label corpus,
the recipe's argv, and a bundle trained with a shared embedding and one
sigmoid column per label, exported with its column labels."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from modelspec.features import FeaturePipeline
from modelspec.labels import column_labels
from rpc.errors import InvalidArgument
from trainer.corpus import (
    generate_many_labels,
    synthetic_labels,
    synthetic_vocabulary,
    write_many_label_corpus,
)
from trainer.recipes import get_recipe, validate_labels

pytestmark = pytest.mark.timeout(600)

BUNDLE_PARAMS = {"epochs": 30, "batch_size": 16, "embedding_dim": 16, "threads": 1}


def test_synthetic_corpus_is_deterministic_multi_label_and_says_each_label_with_its_words():
    docs = generate_many_labels(8, docs_per_label=20, seed=3)
    assert docs == generate_many_labels(8, docs_per_label=20, seed=3)
    assert docs != generate_many_labels(8, docs_per_label=20, seed=4)
    labels = synthetic_labels(8)
    vocabulary = synthetic_vocabulary(8)
    assert {label for d in docs for label in d["labels"]} == set(labels)
    assert any(len(d["labels"]) > 1 for d in docs) and any(not d["labels"] for d in docs)
    for d in docs:
        for label in d["labels"]:
            assert sum(w in vocabulary[label] for w in d["words"]) >= 2


def test_recipe_argv_repeats_label_for_a_bundle_in_column_order():
    argv = get_recipe("").argv(
        model="topics", label="", labels=["b", "a", "c"], corpus="c.jsonl", model_root="m", python="py"
    )
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--label"] == ["b", "a", "c"]


@pytest.mark.parametrize("labels", [["a", "a"], ["a", ""], ["-x"]])
def test_bad_bundle_labels_are_rejected(labels):
    with pytest.raises(InvalidArgument):
        validate_labels(labels)


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    from trainer.recipes.fasttext import TrainConfig, train

    corpus = tmp_path_factory.mktemp("many")
    train_path, test_path = write_many_label_corpus(corpus, 6, docs_per_label=80, seed=1)
    labels = synthetic_labels(6)[::-1]  # any column order the caller asks for
    root = tmp_path_factory.mktemp("bundle-models")
    out = io.StringIO()
    cfg = TrainConfig(
        model="topics",
        label="",
        labels=labels,
        corpus=train_path,
        test_corpus=test_path,
        model_root=root,
        params=BUNDLE_PARAMS,
        seed=0,
        learning_rate=0.05,
    )
    return train(cfg, out=out), labels, test_path


def test_bundle_exports_one_model_with_its_labels_in_column_order(trained_bundle):
    result, labels, test_path = trained_bundle
    pipeline, meta = FeaturePipeline.load(result.version_dir)
    assert column_labels(meta) == tuple(labels)
    assert meta["model"] == "topics"
    assert result.model.output_shape == (None, len(labels))
    assert set(result.label_metrics) == set(labels)
    line = result.to_json()
    assert set(line["label_metrics"]) == set(labels)
    assert all(0.0 <= m["f1"] <= 1.0 for m in line["label_metrics"].values())
    json.dumps(line, ensure_ascii=False)  # a result line


def test_bundle_learns_every_label_and_serves_the_trained_probabilities(trained_bundle):
    import tensorflow as tf

    result, labels, _ = trained_bundle
    assert min(f for _, _, f in result.label_metrics.values()) >= 0.6, result.label_metrics
    pipeline, _ = FeaturePipeline.load(result.version_dir)
    vocabulary = synthetic_vocabulary(6)
    words = [[*vocabulary[label][:3], "的"] for label in labels]
    features = pipeline.transform(words)
    served = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    out = served(input=tf.constant(features))["probability"].numpy()
    assert out.shape == (len(labels), len(labels)) and out.dtype == np.float32
    np.testing.assert_allclose(out, result.model.predict(features, verbose=0), rtol=1e-5, atol=1e-6)
    # Each document's own label is its strongest column.
    assert list(out.argmax(axis=1)) == list(range(len(labels)))


@pytest.mark.parametrize(
    ("label", "labels", "message"),
    [
        ("影视", ["a", "b"], "not both"),
        ("", ["a", "a"], "given twice"),
        ("", ["a", " b"], "not allowed"),
        ("", [], "not allowed"),  # neither
    ],
)
def test_start_requests_with_bad_label_sets_are_rejected(label, labels, message):
    from trainer import validation

    with pytest.raises(InvalidArgument, match=message):
        validation.check_request_fields("topics", label, "", labels)


def test_a_bundle_validated_before_push_is_judged_against_the_served_bundles_own_columns(
    trained_bundle, tmp_path
):
    """The served bundle (columns in reverse order) is scored on the same held-out
    documents, each label from its own column: its macro metrics are the ones it
    reported when it was trained. A --no-push trial exports nothing."""
    import shutil

    from trainer.domain import ValidationPolicy
    from trainer.recipes.fasttext import TrainConfig, train

    served, served_labels, test_path = trained_bundle
    root = tmp_path / "models"
    shutil.copytree(served.version_dir, root / "topics" / str(served.version))
    labels = sorted(served_labels)
    assert labels != served_labels
    common = dict(
        model="topics",
        label="",
        labels=labels,
        corpus=test_path.parent / "train.jsonl",
        test_corpus=test_path,
        model_root=root,
        params={**BUNDLE_PARAMS, "epochs": 3},
        seed=1,
        learning_rate=0.05,
    )
    trial = train(TrainConfig(**common, no_push=True), out=io.StringIO())
    assert trial.version == 0 and trial.version_dir is None and set(trial.label_metrics) == set(labels)
    assert sorted(p.name for p in (root / "topics").iterdir()) == [str(served.version)]

    result = train(TrainConfig(**common, validation=ValidationPolicy()), out=io.StringIO())
    decision = result.push
    assert decision is not None and decision.served_version == served.version
    assert decision.served is not None, decision
    assert decision.served.f1 == pytest.approx(served.f1, abs=1e-6)
    assert decision.served.precision == pytest.approx(served.precision, abs=1e-6)
    assert decision.served.documents == served.test_documents
