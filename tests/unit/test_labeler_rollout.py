"""labeler.rollout's logic with fake predictors (no servers): the canary
split and its stickiness, per-document versions of a split batch, shadow
agreement metrics on a model pair whose disagreement is known by
construction, and shadows that stall or fail never touching the answer.
Config validation of canaries and shadows: errors name the field."""

from __future__ import annotations

import asyncio
import random
from typing import NamedTuple

import numpy as np
import pytest
from prometheus_client import generate_latest

from labeler import cli, config
from labeler.domain import Binding, LabelState, LoadedVersion, ModelCallError, Prediction
from labeler.metrics import LabelerMetrics
from labeler.model_client import ClientPool
from labeler.registry import Snapshot
from labeler.rollout import CANARY, SHADOW, Rollouts, canary_bucket, routes_to_canary
from labeler.service import LabelerService
from labeler.shadow_report import fetch_metrics, format_report, summarize
from labeler.v1 import config_pb2

LABEL = "影视"


def _documents(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [[f"w{rng.randrange(10**9)}", f"x{i}"] for i in range(n)]


def test_canary_split_is_within_tolerance_and_sticky():
    docs = _documents(5000)
    for percent in (1.0, 10.0, 50.0):
        routed = [routes_to_canary(LABEL, d, percent) for d in docs]
        share = sum(routed) / len(docs) * 100
        assert abs(share - percent) < 1.5 + percent * 0.1, (percent, share)
        # Sticky: the same words always go to the same arm.
        assert routed == [routes_to_canary(LABEL, list(d), percent) for d in docs]
    assert not any(routes_to_canary(LABEL, d, 0.0) for d in docs)
    assert all(routes_to_canary(LABEL, d, 100.0) for d in docs)
    # Raising the percent only adds documents to the canary (no flicker back).
    small = {i for i, d in enumerate(docs) if routes_to_canary(LABEL, d, 5.0)}
    large = {i for i, d in enumerate(docs) if routes_to_canary(LABEL, d, 20.0)}
    assert small < large
    # Word boundaries matter: ["ab", "c"] is not ["a", "bc"].
    assert canary_bucket(LABEL, ["ab", "c"]) != canary_bucket(LABEL, ["a", "bc"])


# -- fakes: documents are ["<index>", ...]; probabilities are functions of the index.


class _IndexPipeline:
    def transform(self, documents):
        return np.array([[int(d[0])] for d in documents], dtype=np.int32)


class _FakePredictor:
    """Probabilities ``probability(index)`` per row; or stalls, or fails."""

    def __init__(self, probability, stall: bool = False, fail: str | None = None) -> None:
        self.probability = probability
        self.stall = stall
        self.fail = fail
        self.calls = 0

    async def predict(self, binding: Binding, features: np.ndarray, deadline: float) -> Prediction:
        self.calls += 1
        if self.stall:
            await asyncio.Event().wait()
        if self.fail:
            raise ModelCallError(self.fail, "candidate broken")
        p = np.array([self.probability(int(i)) for i in features[:, 0]], dtype=np.float64)
        return Prediction(p, binding.loaded.version)


def _settings(canary_percent: float | None = None, shadow_percent: float | None = None, max_in_flight=0):
    message = config_pb2.LabelerConfig(default_target="127.0.0.1:9")
    message.labels.add(label=LABEL, model="movie", version=1)
    if canary_percent is not None:
        message.canaries.add(label=LABEL, version=2, percent=canary_percent)
    if shadow_percent is not None:
        message.shadows.add(
            label=LABEL, version=3, sample_percent=shadow_percent, max_in_flight=max_in_flight
        )
    return config.validate(message)


class _Rollouts(Rollouts):
    """Candidates bound directly (no registry polling)."""

    def __init__(self, settings, shadow_predictor, metrics) -> None:
        super().__init__(settings, ClientPool(), shadow_predictor, metrics)
        self.fixed = {}
        for mode, specs, version in ((CANARY, settings.canaries, 2), (SHADOW, settings.shadows, 3)):
            for s in specs:
                loaded = LoadedVersion(version, _IndexPipeline(), {})
                self.fixed[mode] = Binding(s.candidate, loaded, LabelState.AVAILABLE)

    def candidate(self, mode, label):
        return self.fixed.get(mode)


def _served(settings) -> Binding:
    return Binding(settings.labels[0], LoadedVersion(1, _IndexPipeline(), {}), LabelState.AVAILABLE)


class _Registry:
    """The served label bound directly (no polling)."""

    def __init__(self, settings, binding: Binding) -> None:
        self._snapshot = Snapshot(settings, {binding.spec.label: binding})

    def snapshot(self) -> Snapshot:
        return self._snapshot


class _ByArm:
    """One predictor per arm, as the Labeler's one predictor stack would reach two versions."""

    def __init__(self, served, canary) -> None:
        self.served, self.canary = served, canary

    async def predict(self, binding, features, deadline):
        chosen = self.canary if binding.spec.arm == CANARY else self.served
        return await chosen.predict(binding, features, deadline)


class _Answer(NamedTuple):
    probabilities: list[float]
    versions: tuple[int, ...]
    version: int


async def _score(rollouts, served_binding, documents, served, canary=None) -> _Answer:
    """Every document's probability and version through the Labeler's request path (threshold 0)."""
    service = LabelerService(
        _Registry(rollouts._settings, served_binding),  # type: ignore[arg-type]
        _ByArm(served, canary),
        None,
        rollouts,
        rollouts._metrics,
    )
    result = await service.classify_batch(documents, threshold=0.0)
    scores = [r[0] for r in result.results]
    return _Answer(
        [s.probability for s in scores], tuple(s.model_version for s in scores), scores[0].model_version
    )


def _value(metrics: LabelerMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_canary_batch_split_names_each_documents_version():
    settings = _settings(canary_percent=30.0)
    metrics = LabelerMetrics()
    rollouts = _Rollouts(settings, _FakePredictor(lambda i: 0.0), metrics)
    documents = [[str(i), f"doc{i}"] for i in range(400)]

    async def run():
        return await _score(
            rollouts,
            _served(settings),
            documents,
            _FakePredictor(lambda i: 0.25),
            _FakePredictor(lambda i: 0.75),
        )

    prediction = asyncio.run(run())
    expected = [routes_to_canary(LABEL, d, 30.0) for d in documents]
    assert prediction.versions == tuple(2 if c else 1 for c in expected)
    assert prediction.probabilities == [0.75 if c else 0.25 for c in expected]
    assert 0 < sum(expected) < len(documents)
    # Per document: each arm counts the documents it scored.
    assert _value(metrics, "labeler_label_results_total", label=LABEL, arm="canary", code="OK") == sum(
        expected
    )
    assert _value(metrics, "labeler_label_results_total", label=LABEL, arm="served", code="OK") == len(
        documents
    ) - sum(expected)


def test_shadow_agreement_on_a_pair_with_known_disagreement():
    """Served: 0.9 for every document. Candidate: 0.1 for every 4th document
    (a different decision at threshold 0.5), 0.6 for the rest (same decision).
    So 25 % disagree, the served positive rate is 100 %, the candidate's 75 %,
    and the absolute differences are 0.8 (a quarter) and 0.3 (the rest)."""
    settings = _settings(shadow_percent=100.0, max_in_flight=1000)
    metrics = LabelerMetrics()
    rollouts = _Rollouts(settings, _FakePredictor(lambda i: 0.1 if i % 4 == 0 else 0.6), metrics)
    served = _FakePredictor(lambda i: 0.9)

    async def run():
        for start in range(0, 1000, 10):  # 100 requests of 10 documents
            docs = [[str(i)] for i in range(start, start + 10)]
            answer = await _score(rollouts, _served(settings), docs, served, _FakePredictor(None))
            assert answer.probabilities == [0.9] * 10  # the answer is the served one
        await rollouts.drain_shadows()

    asyncio.run(run())
    assert _value(metrics, "labeler_shadow_documents_total", label=LABEL) == 1000
    assert _value(metrics, "labeler_shadow_agreements_total", label=LABEL) == 750
    assert _value(metrics, "labeler_shadow_positives_total", label=LABEL, arm="served") == 1000
    assert _value(metrics, "labeler_shadow_positives_total", label=LABEL, arm="shadow") == 750
    assert _value(metrics, "labeler_shadow_requests_total", label=LABEL, outcome="OK") == 100
    difference = "labeler_shadow_probability_difference_bucket"
    assert _value(metrics, difference, label=LABEL, le="0.2") == 0
    assert _value(metrics, difference, label=LABEL, le="0.5") == 750  # the 0.3s
    assert _value(metrics, difference, label=LABEL, le="0.75") == 750
    assert _value(metrics, difference, label=LABEL, le="1.0") == 1000  # and the 0.8s
    assert _value(metrics, "labeler_shadow_probability_difference_sum", label=LABEL) == pytest.approx(
        250 * 0.8 + 750 * 0.3
    )

    # The operator's summary says the same, from the metrics endpoint.
    port = metrics.serve(0)
    try:
        (summary,) = summarize(fetch_metrics(f"http://127.0.0.1:{port}/metrics"))
        assert (summary.label, summary.documents, summary.sample_percent) == (LABEL, 1000, 100.0)
        assert summary.agreement == 0.75
        assert (summary.served_positive_rate, summary.shadow_positive_rate) == (1.0, 0.75)
        assert summary.mean_abs_difference == pytest.approx(0.425)
        assert summary.p95_abs_difference == 1.0
        assert summary.outcomes == {"OK": 100}
        url = f"http://127.0.0.1:{port}/metrics"
        assert cli.main(["shadow-report", "--metrics-url", url, "--max-disagreement", "0.3"]) == 0
        assert (
            cli.main(["shadow-report", "--metrics-url", url, "--max-disagreement", "0.2"])
            == cli.EXIT_DISAGREEMENT
        )
    finally:
        metrics.close()


@pytest.mark.parametrize("kind", ["stall", "fail"])
def test_a_stalling_or_failing_shadow_never_touches_the_answer(kind):
    settings = _settings(shadow_percent=100.0, max_in_flight=2)
    metrics = LabelerMetrics()
    shadow = _FakePredictor(lambda i: 0.5, stall=kind == "stall", fail="INTERNAL" if kind == "fail" else None)
    rollouts = _Rollouts(settings, shadow, metrics)
    served = _FakePredictor(lambda i: 0.9)

    async def run():
        loop = asyncio.get_running_loop()
        for i in range(20):
            started = loop.time()
            answer = await _score(rollouts, _served(settings), [[str(i)]], served, None)
            assert answer.probabilities == [0.9] and answer.version == 1
            assert loop.time() - started < 1.0  # never waits for a stalled shadow (5 s deadline)
            await asyncio.sleep(0)
        if kind == "fail":
            await rollouts.drain_shadows()
        await rollouts.close()

    asyncio.run(run())
    assert _value(metrics, "labeler_label_results_total", label=LABEL, arm="served", code="OK") == 20
    if kind == "stall":
        # Two in flight, never finishing: every later shadow is shed.
        assert shadow.calls == 2
        assert _value(metrics, "labeler_shadow_requests_total", label=LABEL, outcome="SHED") == 18
    else:
        assert _value(metrics, "labeler_shadow_requests_total", label=LABEL, outcome="INTERNAL") == 20
        assert _value(metrics, "labeler_shadow_documents_total", label=LABEL) == 0


def test_shadows_are_shed_first_while_overloaded():
    settings = _settings(shadow_percent=100.0, max_in_flight=1000)
    metrics = LabelerMetrics()
    shadow = _FakePredictor(lambda i: 0.9)
    rollouts = _Rollouts(settings, shadow, metrics)
    overloaded = True
    rollouts.shed_shadows_when(lambda: overloaded)
    served = _FakePredictor(lambda i: 0.9)

    async def run():
        nonlocal overloaded
        for i in range(20):
            if i == 10:
                overloaded = False
            answer = await _score(rollouts, _served(settings), [[str(i)]], served, None)
            assert answer.probabilities == [0.9]
        await rollouts.drain_shadows()

    asyncio.run(run())
    assert _value(metrics, "labeler_shadow_requests_total", label=LABEL, outcome="SHED") == 10
    assert _value(metrics, "labeler_shadow_requests_total", label=LABEL, outcome="OK") == 10
    assert shadow.calls == 10


def test_shadow_sampling_rate_bounds_shadow_traffic():
    settings = _settings(shadow_percent=10.0, max_in_flight=1000)
    metrics = LabelerMetrics()
    rollouts = _Rollouts(settings, _FakePredictor(lambda i: 0.9), metrics)
    rollouts._random.seed(1)
    served = _FakePredictor(lambda i: 0.9)

    async def run():
        for i in range(2000):
            await _score(rollouts, _served(settings), [[str(i)]], served, None)
        await rollouts.drain_shadows()

    asyncio.run(run())
    shadowed = _value(metrics, "labeler_shadow_requests_total", label=LABEL, outcome="OK")
    assert 140 <= shadowed <= 260, shadowed


# -- config ------------------------------------------------------------------------


def _config(**rollout) -> config_pb2.LabelerConfig:
    message = config_pb2.LabelerConfig()
    message.labels.add(label="影视", model="movie", version=3)
    message.labels.add(label="美妆", model="beauty", version_label="stable")
    for kind, entries in rollout.items():
        for entry in entries:
            getattr(message, kind).add(**entry)
    return message


@pytest.mark.parametrize(
    ("kind", "entry", "message"),
    [
        (
            "canaries",
            {"label": "影视", "version": 4, "percent": 150},
            "canaries[0] (影视): percent must be within [0, 100], got 150",
        ),
        (
            "canaries",
            {"label": "影视", "version": 4, "percent": -1},
            "canaries[0] (影视): percent must be within [0, 100], got -1",
        ),
        (
            "shadows",
            {"label": "影视", "version": 4, "sample_percent": 100.5},
            "shadows[0] (影视): sample_percent must be within [0, 100], got 100.5",
        ),
        (
            "canaries",
            {"label": "影视", "version": 3, "percent": 10},
            "canaries[0] (影视): version 3 is the version label '影视' already serves",
        ),
        (
            "shadows",
            {"label": "美妆", "version_label": "stable", "sample_percent": 10},
            "shadows[0] (美妆): version_label 'stable' is the version",
        ),
        (
            "shadows",
            {"label": "时尚", "version": 2, "sample_percent": 10},
            "shadows[0] (时尚): label '时尚' is not in labels (known labels: 影视, 美妆)",
        ),
        (
            "canaries",
            {"label": "明星", "version": 2, "percent": 10},
            "canaries[0] (明星): label '明星' is not in labels",
        ),
        (
            "canaries",
            {"label": "影视", "percent": 10},
            "canaries[0] (影视): candidate missing; set version (a number) or version_label",
        ),
    ],
)
def test_bad_rollouts_are_rejected_naming_the_field(kind, entry, message):
    with pytest.raises(config.ConfigError) as error:
        config.validate(_config(**{kind: [entry]}))
    assert message in str(error.value)


def test_one_canary_and_one_shadow_per_label():
    entry = {"label": "影视", "version": 4, "percent": 10}
    with pytest.raises(config.ConfigError, match=r"canaries\[1\] \(影视\): label '影视' already has one"):
        config.validate(_config(canaries=[entry, entry]))


def test_valid_rollouts_resolve_to_candidate_specs():
    settings = config.validate(
        _config(
            canaries=[{"label": "影视", "version": 4, "percent": 12.5}],
            shadows=[{"label": "美妆", "version_label": "candidate", "sample_percent": 5}],
        )
    )
    (canary,), (shadow,) = settings.canaries, settings.shadows
    assert canary.percent == 12.5 and canary.candidate.version == 4 and canary.candidate.model == "movie"
    assert shadow.candidate.version_label == "candidate" and shadow.candidate.version is None
    assert shadow.max_in_flight == config.DEFAULT_SHADOW_MAX_IN_FLIGHT
    assert settings.label("影视").version == 3  # the served spec is untouched


def test_shadow_report_without_shadows_says_how_to_configure_one():
    assert summarize(generate_latest(LabelerMetrics().registry).decode()) == []
    assert "configure shadows" in format_report([])


def test_labeler_serve_refuses_a_bad_rollout_at_start(tmp_path, capsys):
    path = tmp_path / "labeler.textproto"
    path.write_text(
        'labels { label: "影视" model: "movie" version: 3 }\n'
        'canaries { label: "影视" version: 4 percent: 101 }\n'
        'shadows { label: "美妆" version: 4 sample_percent: 5 }\n',
        encoding="utf-8",
    )
    assert cli.main(["serve", "--config", str(path), "--port", "0"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "canaries[0] (影视): percent must be within [0, 100], got 101" in err
    assert "shadows[0] (美妆): label '美妆' is not in labels (known labels: 影视)" in err


def test_a_candidate_that_is_the_served_version_is_not_split_nor_shadowed():
    """A label serving "latest" can reach its candidate's version at run time."""
    settings = _settings(canary_percent=100.0, shadow_percent=100.0)
    metrics = LabelerMetrics()
    shadow = _FakePredictor(lambda i: 0.5)
    rollouts = _Rollouts(settings, shadow, metrics)
    served_binding = Binding(settings.labels[0], LoadedVersion(2, _IndexPipeline(), {}), LabelState.AVAILABLE)
    canary = _FakePredictor(lambda i: 0.1)

    async def run():
        return await _score(rollouts, served_binding, [["1"]], _FakePredictor(lambda i: 0.9), canary)

    answer = asyncio.run(run())
    assert answer.probabilities == [0.9] and canary.calls == 0
    before = shadow.calls  # the shadow (version 3) did run
    rollouts.fixed[SHADOW] = rollouts.fixed[CANARY]  # now the shadow candidate is version 2 as well
    rollouts._view = None  # as a candidate registry's change does
    asyncio.run(run())
    assert before == 1 and shadow.calls == 1


@pytest.mark.parametrize("how", ["predict fails", "candidate unavailable"])
def test_a_failing_canary_falls_back_to_the_served_version_for_its_documents_only(how):
    """The canary's documents are scored by the served version (counted as
    fallbacks); the served arm's documents are never failed by the canary."""
    settings = _settings(canary_percent=50.0)
    metrics = LabelerMetrics()
    rollouts = _Rollouts(settings, _FakePredictor(lambda i: 0.0), metrics)
    if how == "candidate unavailable":  # its poll found the version gone
        rollouts.fixed[CANARY] = Binding(
            rollouts.fixed[CANARY].spec, rollouts.fixed[CANARY].loaded, LabelState.UNAVAILABLE, "gone"
        )
    canary = _FakePredictor(lambda i: 0.75, fail="NOT_FOUND")
    documents = [[str(i), f"doc{i}"] for i in range(200)]
    to_canary = sum(routes_to_canary(LABEL, d, 50.0) for d in documents)
    assert 0 < to_canary < len(documents)

    answer = asyncio.run(
        _score(rollouts, _served(settings), documents, _FakePredictor(lambda i: 0.25), canary)
    )
    assert answer.probabilities == [0.25] * len(documents) and set(answer.versions) == {1}
    assert canary.calls == (1 if how == "predict fails" else 0)
    reason = "NOT_FOUND" if how == "predict fails" else "UNAVAILABLE"
    assert _value(metrics, "labeler_canary_fallbacks_total", label=LABEL, reason=reason) == to_canary
    assert _value(metrics, "labeler_label_results_total", label=LABEL, arm="served", code="OK") == len(
        documents
    )
    assert _value(metrics, "labeler_label_results_total", label=LABEL, arm="canary", code="OK") == 0


def test_a_failing_served_arm_leaves_the_canarys_documents_answered():
    settings = _settings(canary_percent=50.0)
    metrics = LabelerMetrics()
    rollouts = _Rollouts(settings, _FakePredictor(lambda i: 0.0), metrics)
    documents = [[str(i), f"doc{i}"] for i in range(100)]
    to_canary = [routes_to_canary(LABEL, d, 50.0) for d in documents]
    service = LabelerService(
        _Registry(settings, _served(settings)),  # type: ignore[arg-type]
        _ByArm(_FakePredictor(lambda i: 0.25, fail="INTERNAL"), _FakePredictor(lambda i: 0.75)),
        None,
        rollouts,
        metrics,
    )
    result = asyncio.run(service.classify_batch(documents, threshold=0.0))
    assert [bool(r) for r in result.results] == to_canary
    assert all(r[0].probability == 0.75 and r[0].model_version == 2 for r in result.results if r)
    (failure,) = result.failures
    assert (
        failure.code_name == "INTERNAL"
        and f"for {to_canary.count(False)} of 100 documents" in failure.message
    )
    assert _value(metrics, "labeler_label_results_total", label=LABEL, arm="served", code="INTERNAL") == (
        to_canary.count(False)
    )
