"""Bundle label tables, column mapping and shared features (pure logic)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from labeler import bundles, shared_features
from labeler.config import LabelSpec
from labeler.domain import Binding, LabelFailure, LabelState, Prediction
from labeler.plan import RequestFeatures
from modelspec.features import FeaturePipeline, FeatureSettings


def _spec(model: str, bundle: bool, label: str | None = None, **kw) -> LabelSpec:
    return LabelSpec(
        label=label or f"bundle:{model}",
        model=model,
        target="t:1",
        signature_name="serving_default",
        input_name="input",
        output_name="probability",
        threshold=kw.pop("threshold", 0.5),
        version=None,
        version_label=None,
        timeout_s=1.0,
        bundle=bundle,
        **kw,
    )


PIPELINE = FeaturePipeline(["a", "b", "c"], {}, FeatureSettings(4, 1, 4))


def _bundle(model: str, columns: list[str], version: int = 1, **kw) -> Binding:
    spec = _spec(model, True, **kw)
    meta = {"labels": columns, "model": model}
    return Binding(spec, bundles.loaded_version(spec, version, PIPELINE, meta), LabelState.AVAILABLE)


def test_table_reads_columns_and_names_labels_bound_twice():
    movie = Binding(_spec("movie", False, label="影视"), None, LabelState.LOADING)
    one = _bundle("one", ["x", "影视", "y"], label_thresholds=(("y", 0.9),))
    two = _bundle("two", ["z", "y"])
    table = bundles.build_table({"影视": movie}, [one, two])
    assert {k: (v.binding.spec.model, v.column, v.threshold) for k, v in table.labels.items()} == {
        "x": ("one", 0, 0.5),
        "z": ("two", 0, 0.5),
    }
    assert set(table.conflicts) == {"影视", "y"}
    assert "labels (movie)" in table.conflicts["影视"] and "bundle one" in table.conflicts["影视"]
    calls, failures = bundles.plan(table, [one, two], [])
    assert [(c.binding.spec.model, c.labels) for c in calls] == [("one", ("x",)), ("two", ("z",))]
    assert {f.label for f in failures} == {"影视", "y"}
    calls, failures = bundles.plan(table, [one, two], ["z", "y"])
    assert [(c.binding.spec.model, c.labels) for c in calls] == [("two", ("z",))]
    assert [f.label for f in failures] == ["y"]


def test_columns_come_from_the_version_that_answered():
    b = _bundle("one", ["a", "b", "c"])
    call = bundles.BundleCall(b, ("a", "c"))
    results: list = [[]]
    failures: list = []
    # The answering version has its columns in another order: c, a, b.
    answer = Prediction(np.array([[0.9, 0.1, 0.6]]), 2, columns=("c", "a", "b"))
    bundles.collect(call, answer, None, results, failures)
    assert sorted((s.label, s.probability) for s in results[0]) == [("c", 0.9)]
    results = [[]]
    bundles.collect(call, answer, 0.0, results, failures)
    assert sorted((s.label, s.probability) for s in results[0]) == [("a", 0.1), ("c", 0.9)]
    answer = Prediction(np.array([[0.9]]), 3, columns=("c",))
    bundles.collect(call, answer, 0.0, [[]], failures)
    assert [(f.label, f.code_name) for f in failures] == [("a", "FAILED_PRECONDITION")]
    failed: list = []
    bundles.collect(call, LabelFailure("bundle:one", "one", "UNAVAILABLE", "down"), None, [[]], failed)
    assert [(f.label, f.model, f.code_name) for f in failed] == [
        ("a", "one", "UNAVAILABLE"),
        ("c", "one", "UNAVAILABLE"),
    ]


def test_version_checks_unknown_overrides_dropped_labels_and_kinds():
    spec = _spec("one", True, label_thresholds=(("q", 0.7),))
    with pytest.raises(ValueError, match="does not carry"):
        bundles.version_columns(spec, {"labels": ["a", "b"]})
    with pytest.raises(ValueError, match="bind it under labels instead"):
        bundles.version_columns(_spec("one", True), {"label": "a"})
    with pytest.raises(ValueError, match="bind it under bundles"):
        bundles.version_columns(_spec("one", False, label="a"), {"labels": ["a", "b"]})
    old, new = _bundle("one", ["a", "b"], 1), _bundle("one", ["b"], 2)
    with pytest.raises(ValueError, match="version 2 drops label"):
        bundles.check_switch(old.spec, old.loaded, new.loaded)
    bundles.check_switch(old.spec, new.loaded, old.loaded)  # adding labels is fine


def test_identical_feature_artifacts_share_one_pipeline_and_one_transform_per_document():
    first = shared_features.intern(FeaturePipeline(["x", "y"], {(1, 2): 3}, FeatureSettings(3, 2, 5)))
    same = shared_features.intern(FeaturePipeline(["x", "y"], {(1, 2): 3}, FeatureSettings(3, 2, 5)))
    other = shared_features.intern(FeaturePipeline(["x", "z"], {(1, 2): 3}, FeatureSettings(3, 2, 5)))
    assert same is first and other is not first

    documents = [["x", "y"], ["y"], ["x"], ["y", "x", "y"]]
    transformed: list[int] = []

    class Counting:
        def transform(self, docs):
            transformed.append(len(docs))
            return first.transform(docs)

    counting = Counting()
    features = RequestFeatures(documents)
    # A canary split: the served arm reads rows 0 and 2, the canary rows 1 and 3, on one pipeline.
    features.want(counting, (0, 2))  # type: ignore[arg-type]
    features.want(counting, (1, 3))  # type: ignore[arg-type]
    served = features.rows(counting, (0, 2))  # type: ignore[arg-type]
    canary = features.rows(counting, (1, 3))  # type: ignore[arg-type]
    whole = features.rows(counting, None)  # type: ignore[arg-type]
    assert transformed == [4]  # once per document, whatever the split
    np.testing.assert_array_equal(served, first.transform([documents[0], documents[2]]))
    np.testing.assert_array_equal(canary, first.transform([documents[1], documents[3]]))
    np.testing.assert_array_equal(whole, first.transform(documents))
    # A pipeline only some rows were wanted for is transformed for those rows only.
    features = RequestFeatures(documents)
    features.want(other, (3,))
    np.testing.assert_array_equal(features.rows(other, (3,)), other.transform([documents[3]]))
    np.testing.assert_array_equal(features.rows(other, (0, 3)), other.transform([documents[0], documents[3]]))


class _CountingBundlePredictor:
    """Answers a bundle's [batch, L] rows from the first feature, counting rows asked."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.rows_asked = 0

    async def predict(self, binding: Binding, features: np.ndarray, deadline: float) -> Prediction:
        self.rows_asked += features.shape[0]
        first = features[:, :1].astype(np.float64) / 10.0
        return Prediction(first + np.arange(self.columns) / 100.0, binding.loaded.version)


def test_the_cache_keeps_a_bundles_whole_row():
    from labeler.cache import CachingPredictor, PredictionCache

    binding = _bundle("one", ["a", "b", "c"])
    inner = _CountingBundlePredictor(3)
    cache = PredictionCache(1 << 20)
    caching = CachingPredictor(inner, cache)
    rows = np.array([[1, 0, 0, 0], [2, 0, 0, 0], [1, 0, 0, 0]], dtype=np.int32)

    async def twice():
        first = await caching.predict(binding, rows, asyncio.get_running_loop().time() + 5)
        second = await caching.predict(binding, rows[::-1].copy(), asyncio.get_running_loop().time() + 5)
        return first, second

    first, second = asyncio.run(twice())
    expected = rows[:, :1] / 10.0 + np.arange(3) / 100.0
    assert first.probabilities.shape == (3, 3)
    np.testing.assert_allclose(first.probabilities, expected)
    np.testing.assert_allclose(second.probabilities, expected[::-1])
    assert inner.rows_asked == 2  # two distinct rows, asked once each; the rest from the cache
    assert len(cache) == 2 and cache.bytes == sum(len(k[1]) for k in cache._entries) + 2 * (3 * 8 + 240)
